-- mod_redis_im_push: XEP-0357 push notifications driven by redis-im.
--
-- redis-im publishes an `offline` event on <event-prefix>push each time
-- messages become offline for one device (stored while it was offline,
-- expired after ack-timeout, moved by IM.DISCONNECT or a kick), with the
-- device's offline `count`. This module turns each such event into one
-- push, through mod_cloud_notify (Debian's prosody-modules), to the push
-- services that this device (this resource) registered with <enable/>.
-- It also stops mod_cloud_notify's own pushes for the chat and normal
-- messages that mod_redis_im stores (its smacks queue, hibernation, MAM
-- and offline paths), so that each offline event gives exactly one push.
-- See docs/prosody.md, "Push notifications".
--
-- Tested with Prosody 0.12.3 and prosody-modules 0.0~hg20230223 (Debian
-- bookworm).

local st = require "util.stanza";
local jid_split = require "util.jid".split;
local watchdog = require "util.watchdog";
local os_time = os.time;

local host = module.host;
if host == "*" then
	error("mod_redis_im_push must be enabled on a VirtualHost, not globally");
end

local api = module:depends("redis_im").redis_im_api;
module:depends("cloud_notify");

local full_sessions = prosody.full_sessions;
local redis = api.redis;
local key_prefix = api.key_prefix;
local field = api.event_field;
local push_channel = api.event_prefix .. "push";

-- mod_cloud_notify keeps its registrations in its own store ("cloud_notify",
-- one map per user: push identifier -> registration); they survive restarts.
local registrations_store = module:open_store("cloud_notify");

-- mod_cloud_notify's marker of an "important" push (a message with a
-- body, which an app server may deliver with high priority): its pings
-- carry no stanza, so it is added here. Every offline message redis-im
-- reports is a stored chat or normal message. "" leaves it out.
local important_body = module:get_option_string("push_notification_important_body", "New Message!");

-- How long the claim on an event is kept (several Prosody processes serving
-- the same domain all receive it; the first to claim it pushes).
local claim_ttl_ms = math.floor(module:get_option_number("im_push_claim_ttl", 600) * 1000);

-- XEP-0357 <enable/>: remember the device (resource) that sent it, in the
-- registration itself (mod_cloud_notify stores it right after this event).
-- mod_cloud_notify records `resource` too, but not when the session has a
-- client_id; im_device is always there.
module:hook("cloud_notify/registration", function (event)
	local origin, push_info = event.origin, event.push_info;
	if origin and origin.resource and push_info then
		push_info.im_device = origin.resource;
	end
end);

local function is_redis_im_message(stanza)
	if not stanza or stanza.name ~= "message" then return false; end
	-- A carbon copy of a message received carries it (and is stored with
	-- it); a copy of one the user sent is not redis-im's.
	local carbon = stanza:find("{urn:xmpp:carbons:2}/{urn:xmpp:forward:0}/{jabber:client}message");
	if carbon then
		if stanza:get_child("sent", "urn:xmpp:carbons:2") then return false; end
		stanza = carbon;
	end
	local t = stanza.attr.type or "normal";
	return t == "chat" or t == "normal";
end

-- The ping this module is sending right now (cloud-notify-ping is handled
-- synchronously, and fires cloud_notify/push for each service it pings).
local current_ping;

module:hook("cloud_notify/push", function (event)
	if current_ping then
		if event.original_stanza == nil and event.username == current_ping.username then
			-- message-count: mod_cloud_notify always says 1; the device has
			-- this many offline messages.
			local form = event.notification_payload and event.notification_payload:get_child("x", "jabber:x:data");
			local summary = event.push_summary or {};
			if form then
				local body_field;
				for f in form:childtags("field") do
					if f.attr.var == "message-count" then
						local v = f:get_child("value");
						if v then v[1] = tostring(current_ping.count); end
					elseif f.attr.var == "last-message-body" then
						body_field = f;
					end
				end
				if important_body ~= "" and not (body_field and body_field:get_child("value")) then
					if not body_field then
						body_field = st.stanza("field", { var = "last-message-body" });
						form:add_direct_child(body_field);
					end
					body_field:add_direct_child(st.stanza("value"):text(important_body));
					summary["last-message-body"] = important_body;
					event.important = true;
				end
			end
			summary["message-count"] = tostring(current_ping.count);
			current_ping.sent = current_ping.sent + 1;
		end
		return;
	end
	-- mod_cloud_notify's own paths (smacks queue, hibernation, delayed acks,
	-- MAM, offline storage): for a chat or normal message mod_redis_im has
	-- stored it, and redis-im's offline event brings the push if it becomes
	-- offline for a device. Anything else (groupchat, other modules' pings)
	-- goes through as before.
	if is_redis_im_message(event.original_stanza) then
		event.reason = "redis-im sends the pushes for stored messages";
		return true;
	end
end, 10);

-- mod_cloud_notify keeps a push-enabled session hibernating for up to
-- push_max_hibernation_timeout until its first push, then gives it the
-- usual smacks_hibernation_time. Its own push being stopped above, do the
-- same when this module pushes for a hibernating session.
local function after_push(session)
	if session and session.hibernating and not session.first_hibernated_push then
		session.first_hibernated_push = os_time();
		if session.hibernating_watchdog and session.original_smacks_callback and session.original_smacks_timeout then
			session.hibernating_watchdog:cancel();
			session.hibernating_watchdog = watchdog.new(session.original_smacks_timeout, session.original_smacks_callback);
		end
	end
end

-- The push services this device registered.
local function services_of(username, device)
	local stored, err = registrations_store:get(username);
	if not stored then
		if err then
			module:log("warn", "Could not read the push registrations of %s: %s", username, tostring(err));
		end
		return nil;
	end
	local mine, n = {}, 0;
	for identifier, info in pairs(stored) do
		if type(info) == "table" and (info.im_device or info.resource) == device then
			mine[identifier] = info;
			n = n + 1;
		end
	end
	return n > 0 and mine or nil, n;
end

local function device_online(devices_reply, device)
	if type(devices_reply) ~= "table" then return false; end
	for i = 1, devices_reply.n or #devices_reply do
		local d = devices_reply[i];
		if type(d) == "table" then
			local m = {};
			for j = 1, (d.n or #d), 2 do m[d[j]] = d[j + 1]; end
			if m.device == device then
				return tonumber(m.online) == 1;
			end
		end
	end
	return false;
end

local function ping(username, device, count, services)
	current_ping = { username = username, count = count, sent = 0 };
	local ok, err = pcall(module.fire_event, module, "cloud-notify-ping", { user = username, push_services = services });
	local sent = current_ping.sent;
	current_ping = nil;
	if not ok then error(err, 0); end
	module:log("info", "Push for %s@%s/%s: %d offline message(s), %d push service(s) notified",
		username, host, device, count, sent);
	after_push(full_sessions[username .. "@" .. host .. "/" .. device]);
end

local function on_push_event(ev)
	if ev.event ~= "offline" then return; end
	local key, device = field(ev, "user"), field(ev, "device");
	if type(key) ~= "string" or type(device) ~= "string" then return; end
	if key:sub(1, #key_prefix) ~= key_prefix then return; end
	local username, user_host = jid_split(key:sub(#key_prefix + 1));
	if user_host ~= host or not username then return; end -- another host's user
	local count = tonumber(ev.count) or 1;
	local services = services_of(username, device);
	if not services then
		module:log("debug", "No push registration for %s@%s/%s", username, host, device);
		return;
	end
	-- The event says the device was offline when it was published. It may
	-- have come back since (then it gets its messages, no push): ask Redis,
	-- which also knows about sessions on other Prosody processes. A local
	-- session may still exist while Redis has it offline: a dead link whose
	-- kick is on its way, or a hibernating stream; both should be woken.
	redis:call({ "IM.DEVICES", key }, function (reply, err)
		if err then
			module:log("warn", "IM.DEVICES for %s failed, no push: %s", username, err);
			return;
		end
		if device_online(reply, device) then
			module:log("debug", "%s@%s/%s is online again, no push", username, host, device);
			return;
		end
		-- Claim the event: only one Prosody pushes for it.
		local claim = "im-push:" .. key .. "/" .. tostring(ev.seq) .. "/" .. tostring(ev.count) .. "/" .. device;
		redis:call({ "SET", claim, host, "NX", "PX", claim_ttl_ms }, function (claimed, cerr)
			if cerr then
				module:log("warn", "Could not claim the push for %s, no push: %s", username, cerr);
				return;
			end
			if not claimed or claimed == api.null then
				module:log("debug", "Push for %s@%s/%s sent by another server", username, host, device);
				return;
			end
			ping(username, device, count, services);
		end);
	end);
end

api.add_channel(push_channel, on_push_event);

function module.unload()
	if api.remove_channel then api.remove_channel(push_channel, on_push_event); end
end

module:log("info", "Push notifications for offline devices from %s", push_channel);
