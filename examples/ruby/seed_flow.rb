#!/usr/bin/env ruby
# The seed's flow against a redis-im server, with redis-rb (Debian's ruby-redis).
#
#   ruby seed_flow.rb [host [port]]      (or REDIS_HOST, REDIS_PORT, REDIS_PASSWORD)
#
# A device connects on an IM node, gets a message and acks it, goes offline,
# misses three messages, comes back, reads the summary, pages and acks. Then a
# message is left unacked: the node hears `resend` events on its channel and
# finally a `kick`, and the device fetches the message when it reconnects.
# Every reply is checked; the exit status is 1 when one differs.
require 'json'
require 'redis'

HOST = ARGV[0] || ENV.fetch('REDIS_HOST', '127.0.0.1')
PORT = Integer(ARGV[1] || ENV.fetch('REDIS_PORT', '6379'))
PASSWORD = ENV['REDIS_PASSWORD'].to_s.empty? ? nil : ENV['REDIS_PASSWORD']
USER = "alice-ruby-#{Process.pid}@example.com"
DEVICE = 'phone'
NODE = "xmpp-ruby-#{Process.pid}"
# Short timer settings so that the events come within seconds.
SETTINGS = { 'im.resend-interval' => '400', 'im.ack-timeout' => '2000' }.freeze

def expect(what, got, want)
  return if got == want

  puts "FAIL #{what}: got #{got.inspect}, expected #{want.inspect}"
  exit 1
end

# A RESP2 map reply ([k1, v1, k2, v2, ...]) as a Hash.
def as_map(flat)
  flat.each_slice(2).to_h
end

def stanza(id, text)
  "<message from='bob@example.com/pc' to='#{USER}' id='#{id}' type='chat'><body>#{text}</body></message>"
end

r = Redis.new(host: HOST, port: PORT, password: PASSWORD)
puts "redis-rb #{Redis::VERSION} -> #{HOST}:#{PORT}, user #{USER}"
saved = r.config(:get, 'im.*')
channel = saved['im.event-prefix'] + NODE

begin
  SETTINGS.each { |name, value| r.config(:set, name, value) }
  puts "CONFIG SET resend-interval 400 ms, ack-timeout 2000 ms (were #{saved['im.resend-interval']}, #{saved['im.ack-timeout']})"

  # 1. The device connects; a message is delivered and acked.
  info = as_map(r.call('IM.CONNECT', USER, DEVICE, 'NODE', NODE))
  expect('IM.CONNECT count', info['count'], 0)
  puts "#{DEVICE} connects on #{NODE}: nothing missed"
  seq, id, pending = r.call('IM.STORE', USER, stanza('m1', 'Hi Alice'), 'DEVICES', 1, DEVICE)
  expect('IM.STORE m1', [id, pending], ['m1', [DEVICE]])
  puts "stored m1 (seq #{seq}), delivered to #{DEVICE}"
  expect('IM.ACK m1', r.call('IM.ACK', USER, DEVICE, 'm1'), 1)
  expect('messages after the ack', as_map(r.call('IM.INFO', USER))['messages'], 0)
  puts "#{DEVICE} acks m1: the mailbox is empty"

  # 2. The device goes offline; messages are kept for it.
  expect('IM.DISCONNECT', r.call('IM.DISCONNECT', USER, DEVICE), 0)
  puts "#{DEVICE} disconnects"
  sent = [%w[m2 Lunch?], ['m3', '12:30 at the usual place'], ['m4', 'Call me']].map do |mid, text|
    seq, id, pending = r.call('IM.STORE', USER, stanza(mid, text))
    expect("IM.STORE #{mid}", [id, pending], [mid, []])
    puts "stored #{mid} (seq #{seq}) offline"
    [seq, mid, stanza(mid, text)]
  end
  first, last = sent.first[0], sent.last[0]

  # 3. It comes back: summary, pages, ack.
  info = as_map(r.call('IM.CONNECT', USER, DEVICE, 'NODE', NODE))
  expect('IM.CONNECT summary', [info['count'], info['first'], info['last']], [3, first, last])
  expect('bytes', info['bytes'], sent.sum { |m| m[2].bytesize })
  puts "#{DEVICE} reconnects: #{info['count']} missed, #{info['bytes']} bytes, seq #{first}..#{last}"
  info = as_map(r.call('IM.OFFLINE.INFO', USER, DEVICE, 'IDS'))
  expect('IM.OFFLINE.INFO ids', info['ids'], %w[m2 m3 m4])
  puts "offline ids: #{info['ids'].join(' ')}"
  cursor = 0
  got = []
  loop do
    cursor, page = r.call('IM.OFFLINE.PAGE', USER, DEVICE, 'AFTER', cursor, 'COUNT', 2)
    got += page.map { |s, mid, _ts, body| [s, mid, body] }
    puts "page: #{page.map { |m| m[1] }.join(' ')} (cursor #{cursor})"
    break if cursor.zero?
  end
  expect('paged messages', got, sent)
  expect('IM.ACK UPTO', r.call('IM.ACK', USER, DEVICE, 'UPTO', last), 3)
  expect('offline after the ack', as_map(r.call('IM.OFFLINE.INFO', USER, DEVICE))['count'], 0)
  puts "#{DEVICE} acks UPTO #{last}: 3 acked"

  # 4. A message the device never acks: resend events, then a kick. The node
  # listens on its channel (a second connection) and stores once subscribed.
  m5 = stanza('m5', 'Are you there?')
  seq5 = nil
  attempts = []
  kicked = false
  events = Redis.new(host: HOST, port: PORT, password: PASSWORD)
  begin
    events.subscribe_with_timeout(15, channel) do |on|
      on.subscribe do
        puts "node #{NODE} listens on #{channel}"
        seq5, _, pending = r.call('IM.STORE', USER, m5, 'DEVICES', 1, DEVICE)
        expect('IM.STORE m5 pending', pending, [DEVICE])
        puts "stored m5 (seq #{seq5}), delivered to #{DEVICE}, which does not ack"
      end
      on.message do |_channel, payload|
        ev = JSON.parse(payload)
        expect('event target', ev.values_at('user', 'device', 'seq', 'id'), [USER, DEVICE, seq5, 'm5'])
        case ev['event']
        when 'resend'
          expect('resent stanza', ev['stanza'], m5)
          attempts << ev['attempt']
          puts "event resend m5, attempt #{ev['attempt']}: the node writes the stanza to the session again"
        when 'kick'
          expect('kick reason', ev['reason'], 'ack-timeout')
          kicked = true
          puts "event kick #{DEVICE} (#{ev['reason']}): the node closes the session"
          events.unsubscribe
        else
          expect('event kind', ev['event'], 'resend or kick')
        end
      end
    end
  rescue Redis::TimeoutError
    # No kick within 15 s: reported below.
  end
  expect('kicked within 15 s', kicked, true)
  expect('resend attempts', attempts, (2...(2 + [attempts.size, 1].max)).to_a)
  devices = r.call('IM.DEVICES', USER).map { |d| as_map(d) }
  expect('IM.DEVICES after the kick', devices.map { |d| d.values_at('device', 'online', 'pending', 'offline') },
         [[DEVICE, 0, 0, 1]])
  info = as_map(r.call('IM.CONNECT', USER, DEVICE, 'NODE', NODE))
  expect('IM.CONNECT after the kick', info['count'], 1)
  cursor, page = r.call('IM.OFFLINE.PAGE', USER, DEVICE)
  expect('page after the kick', [cursor, page.map { |m| m.values_at(0, 1, 3) }], [0, [[seq5, 'm5', m5]]])
  expect('IM.ACK m5', r.call('IM.ACK', USER, DEVICE, 'm5'), 1)
  expect('messages at the end', as_map(r.call('IM.INFO', USER))['messages'], 0)
  puts "#{DEVICE} reconnects, pages m5, acks it by id: the mailbox is empty"
ensure
  SETTINGS.each_key { |name| r.config(:set, name, saved[name]) }
  r.del(USER)
end
puts 'OK'
