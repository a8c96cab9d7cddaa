-- Test-only: exercises what mod_redis_im offers other modules.
-- <iq type='get' to='host'><query xmlns='urn:x-redis-im:probe' user='bob'/></iq>
-- answers with the user's IM.INFO (through call_wait, inside the sender's
-- async runner) and how many messages came on the channel im:test:probe
-- (a channel added with add_channel).
local st = require "util.stanza";
local api = module:depends("redis_im").redis_im_api;
local xmlns = "urn:x-redis-im:probe";
local seen = 0;
api.add_channel("im:test:probe", function (ev)
	if type(ev) == "table" and ev.probe then seen = seen + 1; end
end);
module:hook("iq-get/host/" .. xmlns .. ":query", function (event)
	local origin, stanza = event.origin, event.stanza;
	local user = stanza.tags[1].attr.user;
	local reply, err = api.redis:call_wait({ "IM.INFO", api.user_key(user) });
	if not reply then
		origin.send(st.error_reply(stanza, "wait", "internal-server-error", err));
		return true;
	end
	local info = {};
	for i = 1, reply.n, 2 do info[reply[i]] = tostring(reply[i + 1]); end
	origin.send(st.reply(stanza):tag("query", { xmlns = xmlns, messages = info.messages,
		devices = info.devices, seen = tostring(seen) }));
	return true;
end);
