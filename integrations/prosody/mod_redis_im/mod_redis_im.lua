-- mod_redis_im: reliable delivery and offline storage through redis-im.
--
-- Every chat or normal message routed to a local user is stored in the
-- user's redis-im mailbox (IM.STORE) with the devices (resources) it is
-- handed to; each device acknowledges it (XEP-0198 acks, XEP-0184
-- receipts) with IM.ACK, and gets what it missed from IM.OFFLINE.PAGE when
-- it comes online. This replaces mod_offline, and the bouncing or storing
-- of unacknowledged stanzas by mod_smacks. See docs/prosody.md.
--
-- Tested with Prosody 0.12.3 (Debian bookworm).

local st = require "util.stanza";
local jid_split = require "util.jid".split;
local jid_bare = require "util.jid".bare;
local jid_resource = require "util.jid".resource;
local json = require "util.json";
local xml_parse = require "util.xml".parse;
local new_id = require "util.id".medium;
local sha1 = require "util.hashes".sha1;
local base64_decode = require "util.encodings".base64.decode;
local user_exists = require "core.usermanager".user_exists;
local time_now = require "util.time".now;

local redis_client = module:require "redis_client";
local resp = redis_client.resp;

local pairs, ipairs, type, tostring, setmetatable = pairs, ipairs, type, tostring, setmetatable;
local t_insert = table.insert;

local host = module.host;
if host == "*" then
	error("mod_redis_im must be enabled on a VirtualHost, not globally");
end
local full_sessions, bare_sessions = prosody.full_sessions, prosody.bare_sessions;

local xmlns_sm2, xmlns_sm3 = "urn:xmpp:sm:2", "urn:xmpp:sm:3";
local xmlns_receipts = "urn:xmpp:receipts";
local xmlns_carbons = "urn:xmpp:carbons:2";
local xmlns_forward = "urn:xmpp:forward:0";

-- Settings (docs/prosody.md lists them with their defaults).
local redis_host = module:get_option_string("im_redis_host", "127.0.0.1");
local redis_port = module:get_option_number("im_redis_port", 6379);
local redis_username = module:get_option_string("im_redis_username", nil);
local redis_password = module:get_option_string("im_redis_password", nil);
local redis_db = module:get_option_number("im_redis_db", 0);
local redis_tls = module:get_option("im_redis_tls", false);
local redis_timeout = module:get_option_number("im_redis_timeout", 5);
local redis_reconnect_max = module:get_option_number("im_redis_reconnect_max", 5);
local key_prefix = module:get_option_string("im_key_prefix", "");
local event_prefix = module:get_option_string("im_event_prefix", "im:events:");
local node = module:get_option_string("im_node", (host:gsub("[^%w%.%_%:%-]", "_")));
local page_size = module:get_option_number("im_offline_page_size", 100);
local delay_from = module:get_option_string("im_delay_from", host);
local receipts_ack = module:get_option_boolean("im_receipts_ack", true);
-- Acks, connects and disconnects wait this long for Redis (stores and
-- pages wait im_redis_timeout: a sender or a device is waiting for them).
local ack_timeout = module:get_option_number("im_redis_ack_timeout", 60);
-- How long an acked id is remembered against stale resend events.
local resend_grace = module:get_option_number("im_resend_grace", 60);

if #node > 256 or node:find("[^%w%.%_%:%-]") then
	error("im_node may hold only A-Z a-z 0-9 . _ : - and at most 256 bytes: " .. node);
end
-- The module publishes push hints on <event-prefix>push and restore
-- requests on <event-prefix>archive: a node of that name would get them.
if node == "push" or node == "archive" then
	error("im_node may not be '" .. node .. "': the module uses that channel for other events");
end
page_size = math.max(1, math.min(1000, math.floor(page_size)));

-- TLS: im_redis_tls = true (encrypted, certificate not checked) or a
-- table of Prosody's ssl options (cafile, certificate, key...); with a CA
-- (cafile or capath) the chain and the name (im_redis_tls_name, default
-- im_redis_host) are checked unless im_redis_tls_verify = false.
local tls_has_ca = type(redis_tls) == "table" and (redis_tls.cafile or redis_tls.capath) and true or false;
local tls_verify = module:get_option_boolean("im_redis_tls_verify", tls_has_ca);
local tls_name = module:get_option_string("im_redis_tls_name", redis_host);
local sslctx;
if redis_tls then
	local certmanager = require "core.certmanager";
	local ssl_options = type(redis_tls) == "table" and redis_tls or {};
	local ctx, err = certmanager.create_context("redis-im client", "client", ssl_options);
	if not ctx then
		error("Could not create the TLS context for Redis: " .. tostring(err));
	end
	sslctx = ctx;
end

local function client_options(name, extra)
	local o = {
		host = redis_host, port = redis_port, username = redis_username,
		password = redis_password, db = redis_db, sslctx = sslctx,
		servername = sslctx and tls_name or nil, tls_verify = tls_verify,
		timeout = redis_timeout, reconnect_max = redis_reconnect_max,
		name = name, log = function (...) return module:log(...); end,
	};
	for k, v in pairs(extra or {}) do o[k] = v; end
	return o;
end

local redis = redis_client.new(client_options("prosody:" .. node));
local events_channel = event_prefix .. node;
local subscriber; -- created below, once the handlers exist

local function log_failure(what)
	return function (_, err)
		if err then module:log("warn", "%s failed: %s", what, err); end
	end
end

-- The mailbox key of a local user.
local function user_key(username)
	return key_prefix .. username .. "@" .. host;
end

-- The id a message is stored under: the sender's bare JID and the stanza
-- id, so that two senders' ids never collide and a receipt (which names the
-- stanza id and is addressed to the sender) finds the message. Stanzas with
-- no id get a random one. At most 1024 bytes (longer ones are hashed).
local function stored_id(from, id)
	if not id or id == "" then
		id = "~" .. new_id();
	end
	local s = (from and jid_bare(from) or "") .. " " .. id;
	if #s > 1024 then
		s = "sha1:" .. sha1(s, true);
	end
	return s;
end

----------------------------------------------------------------------
-- Per-session state (session.im):
--   user, device: the mailbox key and the device (the resource)
--   ids[id] = entry: messages handed to this session and not acked yet
--     (reserved: stored for it, the store's reply not read yet; live:
--     pending on the device, not one of its offline messages)
--   inflight[ihead..itail]: those counted by XEP-0198, in the order sent,
--     each entry { id, seq, pos } with pos its number in the smacks count
--   acking[id]: acked, IM.ACK not answered yet
--   flushing, buffer: while offline messages are paged in, live messages
--     for this session wait in buffer (so that it gets them in order)
--   hibernating: XEP-0198 hibernation (offline in redis-im meanwhile)
----------------------------------------------------------------------

local function new_state(session)
	return {
		user = user_key(session.username);
		device = session.resource;
		ids = {};
		acking = {};
		acked_new = {}, acked_old = {}, acked_rotate = time_now() + resend_grace;
		inflight = {}, ihead = 1, itail = 0;
		flushing = false;
		buffer = nil;
	};
end

-- Ids acked in the last resend_grace to 2 * resend_grace seconds (two
-- generations of a set): a resend event published before Redis processed
-- the ack may arrive on the subscriber connection after the ack's reply.
local function recently_acked(im)
	local now = time_now();
	if now >= im.acked_rotate then
		im.acked_old, im.acked_new = im.acked_new, {};
		im.acked_rotate = now + resend_grace;
	end
	return im.acked_new;
end

-- IM.ACK for these ids. Until Redis has answered, they are in im.acking,
-- then for a while in the recently acked sets: a resend event published
-- before Redis saw the ack must not send them again. An ack waits longer
-- than other commands for Redis to be back (a lost ack means a kick).
-- Acks are gathered for im_ack_delay seconds and sent together: one write
-- for many instead of one per <a/> (nothing waits for them).
local ack_delay = module:get_option_number("im_ack_delay", 0.02);
local ack_queue, ack_queue_n, ack_timer = {}, 0, nil;

local function send_ack_command(im, batch)
	local args = { "IM.ACK", im.user, im.device };
	for i = 1, #batch do args[i + 3] = batch[i]; end
	redis:call(args, function (_, err)
		local acking, recent = im.acking, recently_acked(im);
		for _, id in ipairs(batch) do
			local c = acking[id] - 1;
			acking[id] = c > 0 and c or nil;
			recent[id] = true;
		end
		if err then module:log("warn", "IM.ACK failed: %s", err); end
	end, ack_timeout);
end

local function flush_acks()
	ack_timer = nil;
	local queue = ack_queue;
	ack_queue, ack_queue_n = {}, 0;
	for im, ids in pairs(queue) do
		local n, i = #ids, 1;
		while i <= n do
			local batch = {};
			for j = i, math.min(n, i + 9999) do batch[#batch + 1] = ids[j]; end
			send_ack_command(im, batch);
			i = i + 10000;
		end
	end
end

-- Session commands (connect, disconnect, page) go after the acks gathered
-- so far, so that a device never gets again what it has acked.
local function session_call(args, cb, timeout)
	if ack_timer then
		ack_timer:stop();
		flush_acks();
	end
	redis:call(args, cb, timeout);
end

local function send_acks(im, ids)
	local acking = im.acking;
	local q = ack_queue[im];
	if not q then
		q = {};
		ack_queue[im] = q;
	end
	for _, id in ipairs(ids) do
		acking[id] = (acking[id] or 0) + 1;
		q[#q + 1] = id;
	end
	ack_queue_n = ack_queue_n + #ids;
	if ack_delay <= 0 or ack_queue_n >= 10000 then
		if ack_timer then ack_timer:stop(); end
		flush_acks();
	elseif not ack_timer then
		ack_timer = module:add_timer(ack_delay, flush_acks);
	end
end

-- Hands a stanza carrying a stored message to the session. Stream
-- management counts it: the entry is acked when the client's <a h=...>
-- covers its position. A session without stream management cannot ack, so
-- the message counts as acknowledged once written (acks collects the id).
-- Returns false when the session could not take it (it is closing).
local function send_tracked(session, stanza, entry, acks)
	local im = session.im;
	local q = session.smacks and session.outgoing_stanza_queue;
	local before = q and (q:count_acked() + q:count_unacked());
	local ok = session.send(stanza);
	if q and session.outgoing_stanza_queue == q then
		local after = q:count_acked() + q:count_unacked();
		if after == before + 1 then
			entry.pos = after;
			local t = im.itail + 1;
			im.inflight[t] = entry;
			im.itail = t;
			return true;
		end
	end
	if im.ids[entry.id] == entry then im.ids[entry.id] = nil; end
	if not ok then
		return false; -- the session is going away: IM.DISCONNECT makes it offline
	end
	acks[#acks + 1] = entry.id;
	return true;
end

-- Sends an entry's stanza to the session now, or after the offline
-- messages it is being sent (so that the device gets everything in order).
local function send_entry(session, stanza, entry, acks)
	local im = session.im;
	if im.flushing then
		local b = im.buffer;
		b[#b + 1] = { stanza, entry };
		return true;
	end
	return send_tracked(session, stanza, entry, acks);
end

-- Delivers a message pending on the device (live, as opposed to offline
-- messages) to its session, unless the session holds it already.
local function deliver(session, stanza, id, seq, acks)
	local im = session.im;
	if not im or session.destroyed then return false; end
	if im.ids[id] then return true; end -- already handed to this session
	local entry = { id = id, seq = seq, live = true };
	im.ids[id] = entry;
	return send_entry(session, stanza, entry, acks);
end

-- The client acknowledged everything up to position h.
local function acked_upto(session, h)
	local im = session.im;
	if not im then return; end
	local list, i, tail = im.inflight, im.ihead, im.itail;
	local ids = {};
	while i <= tail and list[i].pos <= h do
		local e = list[i];
		list[i] = nil;
		i = i + 1;
		if im.ids[e.id] == e then im.ids[e.id] = nil; end
		ids[#ids + 1] = e.id;
	end
	if i > tail then
		im.ihead, im.itail = 1, 0;
	else
		im.ihead = i;
	end
	if #ids > 0 then send_acks(im, ids); end
end

----------------------------------------------------------------------
-- Sessions: IM.CONNECT on bind, offline messages on initial presence,
-- IM.DISCONNECT when the session ends.
----------------------------------------------------------------------

local function connect_session(session)
	if session.im or not session.username or not session.resource then return; end
	local im = new_state(session);
	session.im = im;
	session_call({ "IM.CONNECT", im.user, im.device, "NODE", node }, log_failure("IM.CONNECT"), ack_timeout);
end

module:hook("resource-bind", function (event)
	connect_session(event.session);
end, 10);

module:hook("resource-unbind", function (event)
	local session = event.session;
	local im = session.im;
	if not im or im.disconnected then return; end
	im.disconnected = true;
	-- What was handed to it and not acked becomes offline for the device.
	session_call({ "IM.DISCONNECT", im.user, im.device }, log_failure("IM.DISCONNECT"), ack_timeout);
end, 10);

local flush_offline;

local function finish_flush(session, im)
	if im.reflush and not session.destroyed then
		-- Asked again meanwhile (a resumed session): one more round.
		im.reflush = false;
		im.flushing = false;
		return flush_offline(session);
	end
	im.flushing = false;
	local buffer = im.buffer or {};
	im.buffer = nil;
	local acks = {};
	for _, item in ipairs(buffer) do
		if session.destroyed then break; end
		send_tracked(session, item[1], item[2], acks);
	end
	if #acks > 0 then send_acks(im, acks); end
end

-- Sends the device's offline messages, page by page, with <delay> stamps
-- (skipping those this session holds already).
function flush_offline(session)
	local im = session.im;
	if im.flushing then
		im.reflush = true;
		return;
	end
	im.flushing = true;
	im.buffer = im.buffer or {};
	local function page(after)
		session_call({ "IM.OFFLINE.PAGE", im.user, im.device, "AFTER", after,
			"COUNT", page_size, "DELAY", delay_from }, function (reply, err)
			if session.im ~= im or session.destroyed then return; end
			if err then
				session.log("warn", "Could not read offline messages: %s", err);
				return finish_flush(session, im);
			end
			local cursor, rows = reply[1], reply[2];
			local acks = {};
			local closing = false;
			for i = 1, rows.n do
				local row = rows[i];
				local seq, id, xml = row[1], row[2], row[4];
				if not im.ids[id] then
					local stanza, perr = xml_parse(xml);
					if stanza then
						local entry = { id = id, seq = seq };
						im.ids[id] = entry;
						if not send_tracked(session, stanza, entry, acks) then
							closing = true; -- the rest stays offline
							break;
						end
					else
						session.log("error", "Stored message %s is not XML Prosody can parse (%s); acknowledging it", tostring(seq), perr);
						acks[#acks + 1] = id;
					end
				end
			end
			if #acks > 0 then send_acks(im, acks); end
			if cursor ~= 0 and not closing and not session.destroyed then
				page(cursor);
			else
				finish_flush(session, im);
			end
		end);
	end
	page(0);
end

-- Initial presence (also after an unavailable one): what the device has
-- not received is sent. Messages handed to this session and not acked yet
-- are skipped; acked ones are no longer offline.
module:hook("message/offline/broadcast", function (event)
	local session = event.origin;
	local im = session.im;
	if not im then return; end
	im.flushed = true;
	flush_offline(session);
	return true; -- mod_offline has nothing to add
end, 10);

-- A deleted account's mailbox goes with it.
module:hook_global("user-deleted", function (event)
	if event.host ~= host or not event.username then return; end
	redis:call({ "DEL", user_key(event.username) }, log_failure("DEL of a deleted user's mailbox"));
end);

----------------------------------------------------------------------
-- Stream management: acks, resumption, and the stanzas left unacked when
-- a session ends (redis-im holds them: not to be bounced or stored again).
----------------------------------------------------------------------

local function on_sm_ack(origin, stanza)
	local q = origin.smacks and origin.outgoing_stanza_queue;
	if not origin.im or not q then return; end
	local h = tonumber(stanza.attr.h);
	if not h then return; end
	if h < q:count_acked() or h > q:count_acked() + q:count_unacked() then
		return; -- mod_smacks closes the session for this
	end
	acked_upto(origin, h);
end
module:hook_tag(xmlns_sm3, "a", on_sm_ack, 10);
module:hook_tag(xmlns_sm2, "a", on_sm_ack, 10);

-- A session whose connection was lost hibernates (mod_smacks keeps it
-- for smacks_hibernation_time, waiting for the client to resume): the
-- device goes offline in redis-im, so that nothing expires or kicks
-- meanwhile and new messages wait in its offline store.
module:hook("smacks-hibernation-start", function (event)
	local session = event.origin;
	local im = session and session.im;
	if not im then return; end
	im.hibernating = true;
	session_call({ "IM.DISCONNECT", im.user, im.device }, log_failure("IM.DISCONNECT"), ack_timeout);
end);

-- Resumed: the client's h in <resume/> acked what it covers; mod_smacks
-- has sent again what it holds unacked; the device is online again and
-- gets what was stored for it meanwhile.
module:hook("smacks-hibernation-end", function (event)
	local session = event.resumed;
	local im = session and session.im;
	if not im then return; end
	local q = session.outgoing_stanza_queue;
	if q then
		acked_upto(session, q:count_acked());
	end
	if im.hibernating then
		im.hibernating = false;
		session_call({ "IM.CONNECT", im.user, im.device, "NODE", node }, log_failure("IM.CONNECT"), ack_timeout);
		if im.flushed then
			flush_offline(session);
		end
	end
end);

local owned = setmetatable({}, { __mode = "k" });

-- Marks the queued copies of our messages, which mod_smacks is about to
-- hand to "delivery/failure".
local function claim_unacked(session)
	local im, q = session.im, session.outgoing_stanza_queue;
	if not im or not q or im.itail < im.ihead then return; end
	local count = 0;
	for _ in q:resume() do count = count + 1; end
	local base = q:count_acked() + q:count_unacked() - count;
	local ours = {};
	for i = im.ihead, im.itail do ours[im.inflight[i].pos] = true; end
	for i, item in q:resume() do
		if ours[base + i] then owned[item] = true; end
	end
end

module:hook("pre-resource-unbind", function (event)
	claim_unacked(event.session);
end, 10);

module:hook_global("server-stopping", function ()
	if ack_timer then
		ack_timer:stop();
		flush_acks();
	end
	for _, user in pairs(prosody.hosts[host].sessions or {}) do
		for _, session in pairs(user.sessions) do
			claim_unacked(session);
		end
	end
end, -80); -- before mod_smacks (-90)

module:hook("delivery/failure", function (event)
	if owned[event.stanza] then
		return true; -- stored in redis-im, offline for this device from now on
	end
end, 10);

----------------------------------------------------------------------
-- Messages to local users: store, then deliver.
----------------------------------------------------------------------

local function error_to_sender(origin, stanza, err)
	local reply;
	if err:match("^IMFULL") then
		reply = st.error_reply(stanza, "wait", "resource-constraint", "The recipient's message store is full");
	elseif err:match("^UNAVAILABLE") then
		reply = st.error_reply(stanza, "wait", "internal-server-error", "The message store is not available, try again later");
	elseif err:match("max%-stanza%-bytes") then
		reply = st.error_reply(stanza, "modify", "policy-violation", "The message is too large to be stored");
	else
		reply = st.error_reply(stanza, "wait", "internal-server-error", "The message could not be stored");
	end
	if origin and origin.send then
		origin.send(reply);
	else
		module:send(reply);
	end
end

-- Who gets the message now, as mod_message and mod_carbons would route
-- it: a full JID that is online, else the top resources of the bare JID;
-- plus carbon copies for the other resources that asked for them.
local function route(origin, stanza, username)
	local user = bare_sessions[username .. "@" .. host];
	if not user then return {}, {}; end
	local direct = {};
	local to = stanza.attr.to;
	local target = jid_resource(to) and full_sessions[to];
	if target and target.destroyed then target = nil; end
	if target then
		direct[1] = target;
	elseif user.top_resources then
		for i, s in ipairs(user.top_resources) do direct[i] = s; end
	end
	local carbons = {};
	local payload = { stanza = stanza, session = origin };
	local should = module:fire_event("carbons-should-copy", payload);
	if should then
		local top_priority = not target and user.top_resources and user.top_resources[1]
			and user.top_resources[1].priority;
		for _, s in pairs(user.sessions) do
			if s.want_carbons and s ~= target and s.priority ~= top_priority then
				carbons[#carbons + 1] = s;
			end
		end
	elseif payload.reason == "private" then
		stanza:maptags(function (tag)
			if not (tag.attr.xmlns == xmlns_carbons and tag.name == "private") then
				return tag;
			end
		end);
	end
	return direct, carbons;
end

local function carbon_copy(stanza, bare, session)
	local copy = st.clone(stanza);
	copy.attr.xmlns = "jabber:client";
	return st.message({ from = bare, to = session.full_jid, type = stanza.attr.type or "normal" })
		:tag("received", { xmlns = xmlns_carbons })
			:tag("forwarded", { xmlns = xmlns_forward })
				:add_child(copy):reset();
end

-- Stores the message and delivers it to the sessions it is pending on.
-- done(ok) is called once it is settled.
local function store_and_deliver(origin, stanza, username, done)
	local direct, carbons = route(origin, stanza, username);
	local id = stored_id(stanza.attr.from, stanza.attr.id);
	local devices, by_device = {}, {};
	-- Each target session holds the id from now on (reserved), so that a
	-- resend event that overtakes the reply (when Prosody reads its Redis
	-- replies late) does not send the message a second time. A hibernating
	-- session (XEP-0198, connection lost) is offline for redis-im: it gets
	-- the message from its offline store if it resumes.
	local function add(s, carbon)
		if not s.im or s.hibernating or by_device[s.resource] then return; end
		local entry = s.im.ids[id];
		local new = not entry;
		if new then
			entry = { id = id, live = true, reserved = true };
			s.im.ids[id] = entry;
		end
		by_device[s.resource] = { s, carbon, entry, new };
		devices[#devices + 1] = s.resource;
	end
	for _, s in ipairs(direct) do add(s, false); end
	for _, s in ipairs(carbons) do add(s, true); end
	local args = { "IM.STORE", user_key(username), tostring(stanza), "ID", id, "DEVICES", #devices };
	for _, d in ipairs(devices) do args[#args + 1] = d; end
	local function settle(reply, err)
		if err then
			module:log("warn", "IM.STORE for %s failed: %s", username, err);
			error_to_sender(origin, stanza, err);
			return;
		end
		if reply == resp.null then
			return; -- not worth keeping offline (a chat state...) and nobody online
		end
		local seq, pending = reply[1], reply[3];
		local bare = username .. "@" .. host;
		for i = 1, pending.n do
			local t = by_device[pending[i]];
			local s, entry = t and t[1], t and t[3];
			if t and t[4] and not s.destroyed and s.im and s.im.ids[id] == entry then
				entry.reserved = nil;
				entry.seq = seq;
				local acks = {};
				send_entry(s, t[2] and carbon_copy(stanza, bare, s) or stanza, entry, acks);
				if #acks > 0 then send_acks(s.im, acks); end
			end
		end
	end
	redis:call(args, function (reply, err)
		local ok, perr = pcall(settle, reply, err);
		-- Reservations the reply did not turn into deliveries are dropped.
		for _, t in pairs(by_device) do
			local s, entry = t[1], t[3];
			if t[4] and entry.reserved and s.im and s.im.ids[id] == entry then
				s.im.ids[id] = nil;
			end
		end
		done(ok);
		if not ok then error(perr, 0); end
	end);
end

-- Stores go out on the one Redis connection and are answered in order, so
-- messages from one sender are delivered in the order they came, without
-- the sender's stream waiting for each: its own acks and other stanzas go
-- on meanwhile. (Nothing here makes a c2s runner wait: Prosody 0.12.3's
-- server_epoll may leave data it had already read unprocessed when a
-- paused connection resumes, which stalls that stream.) While Redis is
-- unreachable, stores wait in the client's queue for im_redis_timeout.
local function store_settled(origin, stanza, username)
	store_and_deliver(origin, stanza, username, function () end);
end

local function handle_message(event)
	local origin, stanza = event.origin, event.stanza;
	local t = stanza.attr.type or "normal";
	if t ~= "chat" and t ~= "normal" then return; end -- stock routing
	local username, to_host = jid_split(stanza.attr.to);
	if to_host ~= host or not username then return; end
	if not bare_sessions[username .. "@" .. host] and not user_exists(username, host) then
		return; -- mod_message answers service-unavailable
	end
	store_settled(origin, stanza, username);
	return true;
end

-- After mod_mam (0) and mod_blocklist, before mod_carbons (-0.5) and
-- mod_message (-1), which this replaces for chat and normal messages.
module:hook("message/full", handle_message, -0.25);
module:hook("message/bare", handle_message, -0.25);

-- Anything else that reaches offline handling (for example from other
-- modules) is stored offline for every device of the user.
module:hook("message/offline/handle", function (event)
	local origin, stanza = event.origin, event.stanza;
	local username = event.username or (stanza.attr.to and jid_split(stanza.attr.to)) or origin.username;
	if not username then return; end
	local id = stored_id(stanza.attr.from, stanza.attr.id);
	redis:call({ "IM.STORE", user_key(username), tostring(stanza), "ID", id, "DEVICES", 0 },
		function (_, err)
			if err then
				module:log("warn", "IM.STORE (offline) for %s failed: %s", username, err);
				error_to_sender(nil, stanza, err);
			end
		end);
	return true;
end, 10);

-- XEP-0184: a receipt from the recipient's device acks the message it names.
local function on_outgoing_message(event)
	local origin, stanza = event.origin, event.stanza;
	local im = origin.im;
	if not im or not receipts_ack then return; end
	local received = stanza:get_child("received", xmlns_receipts);
	local rid = received and received.attr.id;
	if rid and stanza.attr.to then
		send_acks(im, { stored_id(stanza.attr.to, rid) });
	end
end
module:hook("pre-message/full", on_outgoing_message, 10);
module:hook("pre-message/bare", on_outgoing_message, 10);

----------------------------------------------------------------------
-- Events from the module's timer, on <event-prefix><node>.
----------------------------------------------------------------------

local function field(ev, name)
	local v = ev[name];
	if v == nil and ev[name .. "_base64"] then
		v = base64_decode(ev[name .. "_base64"]);
	end
	return v;
end

-- The session an event is about, if it is live on this host.
local function event_session(ev)
	local key, device = field(ev, "user"), field(ev, "device");
	if type(key) ~= "string" or type(device) ~= "string" then return; end
	if key:sub(1, #key_prefix) ~= key_prefix then return; end
	local bare = key:sub(#key_prefix + 1);
	local username, user_host = jid_split(bare);
	if user_host ~= host or not username then return; end
	local session = full_sessions[bare .. "/" .. device];
	if not session or session.destroyed or not session.im then return; end
	return session, session.im;
end

local node_events = {};

-- kick: the session ignored its acks for longer than ack-timeout (or holds
-- more than max-pending): close it. Only when the message it names was
-- handed to this session live: a kick about an earlier session of the same
-- device (one that died with Prosody, say) is stale.
function node_events.kick(ev)
	local session, im = event_session(ev);
	if not session then return; end
	local id = field(ev, "id");
	local entry = id and im.ids[id];
	-- Offline messages sent to it are never pending, so never expire: only
	-- a live delivery of this session can be the one kicked.
	if entry and entry.live and not entry.reserved then
		session.log("info", "redis-im gave up waiting for acks (%s), closing the session", tostring(ev.reason));
		session:close({ condition = "connection-timeout", text = "Messages were not acknowledged in time" });
	end
end

-- resend: a pending message not acked for resend-interval.
function node_events.resend(ev)
	local session, im = event_session(ev);
	if not session then return; end
	local id = field(ev, "id");
	if not id then return; end
	local entry = im.ids[id];
	if entry then
		-- Handed to this session already (or about to be, when the store's
		-- reply comes): XEP-0198 guarantees it reaches the client or the
		-- session ends, so ask for the client's ack instead of sending a
		-- duplicate (unless mod_smacks is asking).
		if entry.pos and session.smacks and not session.hibernating and session.conn
		and not session.awaiting_ack then
			session.send(st.stanza("r", { xmlns = session.smacks }));
		end
		return;
	end
	-- Acked (Redis may not have seen it when it published this event).
	if im.acking[id] or im.acked_new[id] or im.acked_old[id] then return; end
	local xml = field(ev, "stanza");
	local stanza = xml and xml_parse(xml);
	if stanza then
		local acks = {};
		deliver(session, stanza, id, ev.seq, acks);
		if #acks > 0 then send_acks(im, acks); end
	end
end

-- Handlers by channel: one more channel (e.g. <event-prefix>push for
-- push notifications) is one more entry here and one subscribe() below.
local channel_handlers = {};
channel_handlers[events_channel] = function (ev)
	local handler = node_events[ev.event];
	if handler then handler(ev); end
end

local function on_pubsub_message(channel, payload)
	local handler = channel_handlers[channel];
	if not handler then return; end
	local ok, ev = pcall(json.decode, payload);
	if not ok or type(ev) ~= "table" then
		module:log("warn", "Unreadable event on %s", tostring(channel));
		return;
	end
	handler(ev, channel);
end

subscriber = redis_client.new(client_options("prosody:" .. node .. ":events", {
	subscriber = true,
	on_message = on_pubsub_message,
}));
for channel in pairs(channel_handlers) do
	subscriber:subscribe(channel);
end

-- For other modules (module:depends("redis_im").redis_im_api), e.g.
-- mod_redis_im_push: the two Redis clients, the key of a user, and one more
-- Pub/Sub channel with its handler (called with the decoded JSON event).
redis_im_api = { -- luacheck: ignore 111
	redis = redis;
	subscriber = subscriber;
	node = node;
	event_prefix = event_prefix;
	key_prefix = key_prefix;
	user_key = user_key;
	-- an event's field, from <name> or <name>_base64 (binary-safe fields)
	event_field = field;
	null = resp.null; -- a nil reply
	add_channel = function (channel, handler)
		channel_handlers[channel] = handler;
		subscriber:subscribe(channel);
	end;
	-- (the node's own channel stays)
	remove_channel = function (channel, handler)
		if channel == events_channel or channel_handlers[channel] ~= handler then return; end
		channel_handlers[channel] = nil;
		subscriber:unsubscribe(channel);
	end;
};

-- Sessions that were bound before the module was loaded.
for _, user in pairs(prosody.hosts[host].sessions or {}) do
	for _, session in pairs(user.sessions) do
		connect_session(session);
	end
end

module:log("info", "redis-im at %s:%d, node %s, events on %s", redis_host, redis_port, node, events_channel);

function module.unload()
	if ack_timer then
		ack_timer:stop();
		flush_acks();
	end
	subscriber:close();
	redis:close();
	for _, user in pairs(prosody.hosts[host].sessions or {}) do
		for _, session in pairs(user.sessions) do
			session.im = nil;
		end
	end
end

