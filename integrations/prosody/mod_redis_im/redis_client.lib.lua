-- A small Redis client on Prosody's own network layer (net.connect over
-- net.server), so that talking to Redis never blocks the event loop.
--
--   local client = redis_client.new{ host = "127.0.0.1", port = 6379, ... }
--   client:call({ "IM.INFO", "bob@example.com" }, function (reply, err) end)
--   local reply, err = client:call_wait({ ... })   -- inside a util.async runner
--   local sub = redis_client.new{ ..., subscriber = true,
--                                 on_message = function (channel, payload) end }
--   sub:subscribe("im:events:node-1")
--
-- Commands are pipelined on one connection and answered in order. Commands
-- given while the connection is down wait in a queue and are sent once it is
-- back (reconnecting with exponential back-off); a command that could not be
-- sent within its time (`timeout` seconds, or the one given to call) fails
-- with an error starting with "UNAVAILABLE". A command that was sent but not
-- answered when the connection broke is sent again on the next connection
-- (every IM.* command this integration uses is safe to repeat: IM.STORE
-- deduplicates on its ID), and fails with UNAVAILABLE once its time is up.
-- A connection that leaves a command unanswered and receives nothing for
-- `timeout` seconds is closed and opened again.
-- A subscriber client holds its subscriptions across reconnections.

local resp = module:require "resp";
local net_connect = require "net.connect".connect;
local basic_resolver = require "net.resolvers.basic";
local async = require "util.async";
local time_now = require "util.time".now;
local new_id = require "util.id".short;
local x509 = require "util.x509";

local type, pairs, ipairs, tostring, setmetatable = type, pairs, ipairs, tostring, setmetatable;
local xpcall, traceback = xpcall, debug.traceback;

local lib = { resp = resp }; -- the same resp (its null) for the callers
local verify_tls;

local client_methods = {};
local client_mt = { __index = client_methods };

local function safe_call(self, f, ...)
	local ok, err = xpcall(f, traceback, ...);
	if not ok then
		self:log("error", "Error in Redis reply handler: %s", err);
	end
end

function lib.new(opts)
	local self = setmetatable({
		host = opts.host or "127.0.0.1";
		port = opts.port or 6379;
		username = opts.username;
		password = opts.password;
		db = opts.db or 0;
		sslctx = opts.sslctx;
		servername = opts.servername; -- SNI, and the name the certificate must show
		tls_verify = opts.tls_verify; -- check the chain and the name

		timeout = opts.timeout or 5;
		reconnect_min = opts.reconnect_min or 0.1;
		reconnect_max = opts.reconnect_max or 5;
		keepalive = opts.keepalive or 30;
		name = opts.name or ("redis-" .. new_id());
		subscriber = opts.subscriber and true or false;
		on_message = opts.on_message;
		on_ready = opts.on_ready;
		log_fn = opts.log or module._log;
		state = "idle"; -- idle, connecting, handshake, ready, backoff, closed
		queue = {}, qhead = 1, qtail = 0; -- not sent yet
		inflight = {}, ihead = 1, itail = 0; -- sent, reply awaited
		channels = {}; -- subscriber: channel -> true
		backoff = nil;
		last_read = time_now();
		stats = { sent = 0, replies = 0, reconnects = 0, failed = 0 };
	}, client_mt);
	self.timer = module:add_timer(1, function ()
		if self.state == "closed" then return; end
		self:tick();
		return 1;
	end);
	return self;
end

function client_methods:log(level, fmt, ...)
	return self.log_fn(level, "[%s] " .. fmt, self.name, ...);
end

-- FIFO helpers (arrays with head and tail indices: O(1) at both ends)
local function q_push(self, list, head, tail, item)
	local t = self[tail] + 1;
	self[list][t] = item;
	self[tail] = t;
end
local function q_pop(self, list, head, tail)
	local h = self[head];
	if h > self[tail] then return nil; end
	local item = self[list][h];
	self[list][h] = nil;
	if h == self[tail] then
		self[head], self[tail] = 1, 0;
	else
		self[head] = h + 1;
	end
	return item;
end
local function q_peek(self, list, head, tail)
	local h = self[head];
	if h > self[tail] then return nil; end
	return self[list][h];
end

function client_methods:is_ready()
	return self.state == "ready";
end

local function write_request(self, req)
	req.sent_at = time_now();
	q_push(self, "inflight", "ihead", "itail", req);
	self.stats.sent = self.stats.sent + 1;
	self.conn:write(resp.encode(req.args));
end

local function fail(self, req, err)
	self.stats.failed = self.stats.failed + 1;
	if req.cb then safe_call(self, req.cb, nil, err); end
end

-- Sends the command (a list of arguments), calls cb(reply, nil) or
-- cb(nil, error_message) once. A Redis error reply is passed as the
-- error message (e.g. "IMFULL mailbox holds ..."). timeout: seconds it may
-- wait for a connection (default: the client's).
function client_methods:call(args, cb, timeout)
	local req = { args = args, cb = cb, deadline = time_now() + (timeout or self.timeout) };
	if self.state == "closed" then
		fail(self, req, "UNAVAILABLE client closed");
		return;
	end
	if self.state == "ready" and not self.subscriber then
		write_request(self, req);
	else
		q_push(self, "queue", "qhead", "qtail", req);
		if self.state == "idle" then self:connect(); end
	end
end

-- The same, waiting for the reply inside a util.async runner.
function client_methods:call_wait(args)
	local wait, done = async.waiter();
	local reply, err;
	self:call(args, function (r, e)
		reply, err = r, e;
		done();
	end);
	wait();
	return reply, err;
end

-- Subscriber clients: adds channels (kept across reconnections).
function client_methods:subscribe(...)
	local new = { "SUBSCRIBE" };
	for _, ch in ipairs({ ... }) do
		if not self.channels[ch] then
			self.channels[ch] = true;
			new[#new + 1] = ch;
		end
	end
	if #new > 1 and self.state == "ready" then
		self.conn:write(resp.encode(new));
	elseif self.state == "idle" then
		self:connect();
	end
end

function client_methods:unsubscribe(...)
	local old = { "UNSUBSCRIBE" };
	for _, ch in ipairs({ ... }) do
		if self.channels[ch] then
			self.channels[ch] = nil;
			old[#old + 1] = ch;
		end
	end
	if #old > 1 and self.state == "ready" then
		self.conn:write(resp.encode(old));
	end
end

local function schedule_reconnect(self, why)
	if self.state == "closed" then return; end
	self.state = "backoff";
	local delay = self.backoff or self.reconnect_min;
	self.backoff = math.min(delay * 2, self.reconnect_max);
	self.stats.reconnects = self.stats.reconnects + 1;
	self:log(self.stats.reconnects <= 1 and "warn" or "debug",
		"Redis at %s:%s unavailable (%s), reconnecting in %gs", self.host, self.port, tostring(why), delay);
	module:add_timer(delay, function ()
		if self.state == "backoff" then self:connect(); end
	end);
end

-- Everything sent and not answered goes back to the front of the queue.
local function requeue_inflight(self)
	local old, n = {}, 0;
	while true do
		local req = q_pop(self, "inflight", "ihead", "itail");
		if not req then break; end
		if not req.internal then
			n = n + 1;
			old[n] = req;
		end
	end
	if n == 0 then return; end
	local rest = {};
	while true do
		local req = q_pop(self, "queue", "qhead", "qtail");
		if not req then break; end
		rest[#rest + 1] = req;
	end
	for i = 1, n do q_push(self, "queue", "qhead", "qtail", old[i]); end
	for i = 1, #rest do q_push(self, "queue", "qhead", "qtail", rest[i]); end
end

local function on_ready(self)
	self.state = "ready";
	if self.stats.reconnects > 0 then
		self:log("info", "Redis at %s:%s is back", self.host, self.port);
	end
	self.backoff = nil;
	if self.subscriber then
		local chans = { "SUBSCRIBE" };
		for ch in pairs(self.channels) do chans[#chans + 1] = ch; end
		if #chans > 1 then self.conn:write(resp.encode(chans)); end
	else
		while true do
			local req = q_pop(self, "queue", "qhead", "qtail");
			if not req then break; end
			write_request(self, req);
		end
	end
	if self.on_ready then safe_call(self, self.on_ready, self); end
end

local function handshake(self)
	self.state = "handshake";
	local steps = {};
	if self.password then
		if self.username then
			steps[#steps + 1] = { "AUTH", self.username, self.password };
		else
			steps[#steps + 1] = { "AUTH", self.password };
		end
	end
	if self.db and self.db ~= 0 and not self.subscriber then
		steps[#steps + 1] = { "SELECT", self.db };
	end
	steps[#steps + 1] = { "CLIENT", "SETNAME", (self.name:gsub("[^%w%-_.:]", "_")) };
	local remaining = #steps;
	for _, args in ipairs(steps) do
		write_request(self, { args = args, internal = true, cb = function (_, err)
			if err and args[1] ~= "CLIENT" then
				self:log("error", "Redis %s failed: %s", args[1], err);
				if self.conn then self.conn:close(); end
				return;
			end
			remaining = remaining - 1;
			if remaining == 0 and self.state == "handshake" then on_ready(self); end
		end });
	end
end

local function handle_push(self, msg)
	if type(msg) ~= "table" or resp.is_error(msg) then
		if resp.is_error(msg) then self:log("warn", "Redis error on subscriber: %s", msg.err); end
		return;
	end
	local kind = msg[1];
	if kind == "message" then
		if self.on_message then safe_call(self, self.on_message, msg[2], msg[3]); end
	elseif kind == "pmessage" then
		if self.on_message then safe_call(self, self.on_message, msg[3], msg[4], msg[2]); end
	end
end

-- After the TLS handshake: the chain verifies against the CA the context
-- was given, and the certificate names the server.
function verify_tls(conn, name)
	local sock = conn:socket();
	if not (sock and sock.getpeerverification) then return false, "not a TLS connection"; end
	local chain_ok, errors = sock:getpeerverification();
	if not chain_ok then
		local list = {};
		for _, errs in pairs(errors or {}) do
			for _, e in ipairs(errs) do list[#list + 1] = tostring(e); end
		end
		return false, "chain does not verify (" .. table.concat(list, ", ") .. ")";
	end
	local cert = sock:getpeercertificate();
	if not cert then return false, "no certificate"; end
	if not x509.verify_identity(name, nil, cert) then
		return false, "certificate is not for " .. tostring(name);
	end
	return true;
end

function client_methods:connect()
	if self.state == "closed" then return; end
	self.state = "connecting";
	local listeners = {};
	local conn_ref;
	function listeners.onconnect(conn)
		if self.state ~= "connecting" then conn:close(); return; end
		if self.sslctx and self.tls_verify then
			local ok, why = verify_tls(conn, self.servername or self.host);
			if not ok then
				self:log(self.tls_refused and "debug" or "error",
					"Redis at %s:%s: TLS certificate not accepted: %s", self.host, self.port, why);
				self.tls_refused = true;
				conn_ref = conn;
				self.conn = conn;
				conn:close();
				return;
			end
		end
		self.tls_refused = nil;
		conn_ref = conn;
		self.conn = conn;
		self.parser = resp.parser();
		self.last_read = time_now();
		conn:setoption("tcp-nodelay", true);
		handshake(self);
	end
	function listeners.onincoming(conn, data)
		if conn ~= self.conn then return; end
		self.last_read = time_now();
		local parser = self.parser;
		parser:feed(data);
		while true do
			local ok, reply = pcall(parser.next, parser);
			if not ok then
				self:log("error", "%s", reply);
				conn:close();
				return;
			end
			if reply == nil then break; end
			local req = q_peek(self, "inflight", "ihead", "itail");
			if req then
				q_pop(self, "inflight", "ihead", "itail");
				self.stats.replies = self.stats.replies + 1;
				if req.cb then
					if resp.is_error(reply) then
						safe_call(self, req.cb, nil, reply.err);
					else
						safe_call(self, req.cb, reply, nil);
					end
				end
			elseif self.subscriber then
				handle_push(self, reply);
			else
				self:log("warn", "Unexpected reply from Redis");
			end
			if conn ~= self.conn then return; end -- closed by a callback
		end
	end
	function listeners.ondisconnect(conn, err)
		if conn_ref and conn ~= self.conn then return; end
		self.conn = nil;
		requeue_inflight(self);
		schedule_reconnect(self, err or "connection closed");
	end
	function listeners.onfail(_, err)
		if self.conn then return; end
		schedule_reconnect(self, err or "connection failed");
	end
	function listeners.onreadtimeout()
		return true; -- idle is normal; tick() sends a PING now and then
	end
	local extra;
	if self.sslctx then
		extra = { sslctx = self.sslctx, servername = self.servername or self.host };
	end
	net_connect(basic_resolver.new(self.host, self.port, "tcp", extra), listeners,
		{ sslctx = self.sslctx }, self);
end

-- Once a second: fail commands that could not be sent in time, close a
-- connection that leaves a command unanswered too long, keep it alive.
function client_methods:tick()
	local now = time_now();
	-- Deadlines differ from command to command: look at every queued one.
	if self.qtail >= self.qhead then
		local keep, expired = {}, {};
		while true do
			local req = q_pop(self, "queue", "qhead", "qtail");
			if not req then break; end
			if req.deadline > now then
				keep[#keep + 1] = req;
			else
				expired[#expired + 1] = req;
			end
		end
		for _, req in ipairs(keep) do q_push(self, "queue", "qhead", "qtail", req); end
		for _, req in ipairs(expired) do fail(self, req, "UNAVAILABLE Redis did not answer in time"); end
	end
	if self.conn and (self.state == "ready" or self.state == "handshake") then
		-- Silent for `timeout` with a command unanswered: the connection
		-- is dead or Redis hangs. (A busy Prosody reading replies late has
		-- read something meanwhile.)
		local oldest = q_peek(self, "inflight", "ihead", "itail");
		if oldest and now - oldest.sent_at > self.timeout and now - self.last_read > self.timeout then
			self:log("warn", "Redis left a command unanswered for %gs, reconnecting", now - oldest.sent_at);
			self.conn:close();
			return;
		end
		if self.subscriber and now - self.last_read > self.keepalive + self.timeout then
			self:log("warn", "Redis subscriber connection silent, reconnecting");
			self.conn:close();
			return;
		end
		if self.state == "ready" and now - self.last_read > self.keepalive
		and now - (self.last_ping or 0) > self.keepalive then
			self.last_ping = now;
			if self.subscriber then
				self.conn:write(resp.encode({ "PING" }));
			elseif not q_peek(self, "inflight", "ihead", "itail") then
				write_request(self, { args = { "PING" }, internal = true });
			end
		end
	end
end

function client_methods:close()
	if self.state == "closed" then return; end
	self.state = "closed";
	local conn = self.conn;
	self.conn = nil;
	if conn then conn:close(); end
	while true do
		local req = q_pop(self, "inflight", "ihead", "itail") or q_pop(self, "queue", "qhead", "qtail");
		if not req then break; end
		if not req.internal then fail(self, req, "UNAVAILABLE client closed"); end
	end
end

function client_methods:pending()
	return (self.qtail - self.qhead + 1) + (self.itail - self.ihead + 1);
end

return lib;
