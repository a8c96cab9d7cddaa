-- Unit tests of resp.lib.lua (run with lua5.4; no Prosody needed).
package.path = "../mod_redis_im/?.lib.lua;" .. package.path
local resp = require "resp"

local failures = 0
local function check(cond, msg)
	if not cond then
		failures = failures + 1
		print("FAIL: " .. msg)
	end
end

-- encoding
check(resp.encode({ "SET", "k", "v" }) == "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n", "encode")
check(resp.encode({ "X", 1796100331125000 }) == "*2\r\n$1\r\nX\r\n$16\r\n1796100331125000\r\n", "encode integer")
check(resp.encode({ "X", "" }) == "*2\r\n$1\r\nX\r\n$0\r\n\r\n", "encode empty")
check(resp.encode({ "X", "a\r\nb\0c" }) == "*2\r\n$1\r\nX\r\n$6\r\na\r\nb\0c\r\n", "encode binary")

local function all(bytes, step)
	local p = resp.parser()
	local out = {}
	step = step or #bytes
	for i = 1, #bytes, step do
		p:feed(bytes:sub(i, i + step - 1))
		while true do
			local v = p:next()
			if v == nil then break end
			out[#out + 1] = v
		end
	end
	return out, p
end

local wire = "+OK\r\n-IMFULL mailbox full\r\n:42\r\n:-7\r\n$5\r\nhello\r\n$-1\r\n$0\r\n\r\n*-1\r\n*0\r\n"
	.. "*3\r\n:1796100331125000\r\n$2\r\nm1\r\n*1\r\n$5\r\nphone\r\n"
	.. "*2\r\n:0\r\n*1\r\n*4\r\n:1\r\n$2\r\nid\r\n:3\r\n$12\r\n<message/>\r\n\r\n"
for _, step in ipairs({ 1000, 1, 2, 3, 7 }) do
	local v, p = all(wire, step)
	local tag = " (chunks of " .. step .. ")"
	check(#v == 11, "count" .. tag .. ": " .. #v)
	check(v[1] == "OK", "simple" .. tag)
	check(resp.is_error(v[2]) and v[2].err == "IMFULL mailbox full", "error" .. tag)
	check(v[3] == 42 and math.type(v[3]) == "integer", "integer" .. tag)
	check(v[4] == -7, "negative" .. tag)
	check(v[5] == "hello", "bulk" .. tag)
	check(v[6] == resp.null, "nil bulk" .. tag)
	check(v[7] == "", "empty bulk" .. tag)
	check(v[8] == resp.null, "nil array" .. tag)
	check(type(v[9]) == "table" and v[9].n == 0, "empty array" .. tag)
	check(v[10].n == 3 and v[10][1] == 1796100331125000 and v[10][2] == "m1" and v[10][3][1] == "phone", "store reply" .. tag)
	check(v[11][1] == 0 and v[11][2][1][4] == "<message/>\r\n", "page reply, CRLF inside a bulk" .. tag)
	check(p:buffered() == 0, "nothing left" .. tag)
end

-- a large bulk string in small reads, then a reply after it
do
	local big = string.rep("x", 200000)
	local bytes = "$" .. #big .. "\r\n" .. big .. "\r\n+after\r\n"
	local v = all(bytes, 8192)
	check(#v == 2 and v[1] == big and v[2] == "after", "large bulk")
end

-- nil elements inside an array keep their places
do
	local v = all("*3\r\n$1\r\na\r\n$-1\r\n$1\r\nc\r\n")
	check(v[1].n == 3 and v[1][1] == "a" and v[1][2] == resp.null and v[1][3] == "c", "nil in array")
end

-- protocol errors raise
do
	local p = resp.parser()
	p:feed("?what\r\n")
	local ok, err = pcall(p.next, p)
	check(not ok and tostring(err):find("RESP protocol error"), "protocol error raises")
	p = resp.parser()
	p:feed("$3\r\nabcd\r\n")
	ok, err = pcall(p.next, p)
	check(not ok, "bulk without CRLF raises")
end

-- map helper
do
	local m = resp.map({ n = 4, "count", 2, "bytes", 10 })
	check(m.count == 2 and m.bytes == 10, "map")
end

if failures > 0 then
	print(failures .. " failed")
	os.exit(1)
end
print("ok")
