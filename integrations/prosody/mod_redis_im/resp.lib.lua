-- RESP2 encoder and incremental reply parser, in plain Lua (5.1 to 5.4),
-- with no dependency on Prosody so that it can be tested on its own.
--
--   local resp = require "resp"          -- or module:require "resp"
--   local wire = resp.encode({ "SET", "k", "v" })
--   local p = resp.parser()
--   p:feed(bytes)                        -- as they arrive from the socket
--   local reply = p:next()               -- nil while no whole reply is buffered
--
-- Replies: simple strings and bulk strings are Lua strings, integers are
-- Lua numbers (integers on Lua 5.3+), a nil bulk string or nil array is
-- resp.null, an error is a table { err = "MESSAGE" } (resp.is_error), an
-- array is a table with its length in field n (elements may be resp.null).

local tostring, tonumber, type, setmetatable = tostring, tonumber, type, setmetatable;
local s_byte, s_find, s_sub, s_format = string.byte, string.find, string.sub, string.format;
local t_concat = table.concat;
local math_type = math.type;

local resp = {};

local null = setmetatable({}, { __tostring = function () return "resp.null"; end });
resp.null = null;

local error_mt = { __tostring = function (e) return e.err; end };
function resp.is_error(v)
	return type(v) == "table" and getmetatable(v) == error_mt;
end
function resp.error(msg)
	return setmetatable({ err = msg }, error_mt);
end

local function arg_string(a)
	local t = type(a);
	if t == "string" then
		return a;
	elseif t == "number" then
		if (math_type and math_type(a) == "integer") or a == math.floor(a) then
			return s_format("%d", a);
		end
		return tostring(a);
	end
	return tostring(a);
end

-- Encodes one command (a list of arguments) as a RESP array of bulk strings.
function resp.encode(args)
	local n = args.n or #args;
	local out = { "*", tostring(n), "\r\n" };
	local k = 3;
	for i = 1, n do
		local s = arg_string(args[i]);
		out[k+1] = "$"; out[k+2] = tostring(#s); out[k+3] = "\r\n";
		out[k+4] = s; out[k+5] = "\r\n";
		k = k + 5;
	end
	return t_concat(out);
end

-- Parses one value starting at pos. Returns value, next_pos; or nil, need
-- where need is the smallest buffer length that could hold the value (a
-- lower bound, so that the caller waits for at least that much); or
-- false, message on a protocol error.
local function parse(buf, pos)
	local len = #buf;
	if pos > len then return nil, pos; end
	local eol = s_find(buf, "\r\n", pos, true);
	if not eol then return nil, len + 1; end
	local kind = s_byte(buf, pos);
	local line = s_sub(buf, pos + 1, eol - 1);
	local after = eol + 2;
	if kind == 43 then -- '+'
		return line, after;
	elseif kind == 45 then -- '-'
		return setmetatable({ err = line }, error_mt), after;
	elseif kind == 58 then -- ':'
		local v = tonumber(line);
		if not v then return false, "bad integer: " .. line; end
		return v, after;
	elseif kind == 36 then -- '$'
		local size = tonumber(line);
		if not size then return false, "bad bulk length: " .. line; end
		if size < 0 then return null, after; end
		local last = after + size - 1;
		if last + 2 > len then return nil, last + 2; end
		if s_sub(buf, last + 1, last + 2) ~= "\r\n" then
			return false, "bulk string not followed by CRLF";
		end
		return s_sub(buf, after, last), last + 3;
	elseif kind == 42 then -- '*'
		local count = tonumber(line);
		if not count then return false, "bad array length: " .. line; end
		if count < 0 then return null, after; end
		local arr = { n = count };
		local p = after;
		for i = 1, count do
			local v, np = parse(buf, p);
			if v == nil or v == false then return v, np; end
			arr[i] = v;
			p = np;
		end
		return arr, p;
	end
	return false, "unknown reply type " .. s_format("%q", s_sub(buf, pos, pos));
end
resp.parse = parse;

local parser_methods = {};
local parser_mt = { __index = parser_methods };

-- An incremental parser: feed() bytes, next() replies. Chunks are joined
-- only once enough bytes for the next reply have arrived, so a large reply
-- arriving in many reads costs linear time.
function resp.parser()
	return setmetatable({ buf = "", pos = 1, chunks = {}, pending = 0, need = 0 }, parser_mt);
end

function parser_methods:feed(data)
	if data and #data > 0 then
		local chunks = self.chunks;
		chunks[#chunks + 1] = data;
		self.pending = self.pending + #data;
	end
end

local function join(self)
	local chunks = self.chunks;
	if #chunks == 0 then return; end
	local buf = self.buf;
	if self.pos > 1 then
		buf = s_sub(buf, self.pos);
		self.pos = 1;
	end
	chunks[#chunks + 1] = nil;
	self.buf = buf .. t_concat(chunks);
	self.chunks = {};
	self.pending = 0;
end

-- The next whole reply, or nil while none is buffered. Raises an error
-- (a string starting with "RESP protocol error") on bytes that are not RESP.
function parser_methods:next()
	local avail = #self.buf - self.pos + 1 + self.pending;
	if avail <= 0 or avail < self.need then return nil; end
	join(self);
	local v, np = parse(self.buf, self.pos);
	if v == nil then
		self.need = np - self.pos + 1;
		return nil;
	elseif v == false then
		error("RESP protocol error: " .. tostring(np));
	end
	self.need = 0;
	self.pos = np;
	if np > #self.buf then
		self.buf, self.pos = "", 1;
	end
	return v;
end

-- Bytes buffered and not yet returned as replies.
function parser_methods:buffered()
	return #self.buf - self.pos + 1 + self.pending;
end

-- Turns a flat [k1, v1, k2, v2, ...] array (a RESP2 map) into a table.
function resp.map(arr)
	if type(arr) ~= "table" or resp.is_error(arr) or arr == null then return nil; end
	local m = {};
	for i = 1, (arr.n or #arr), 2 do
		m[arr[i]] = arr[i + 1];
	end
	return m;
end

return resp;
