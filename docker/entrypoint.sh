#!/bin/sh
# The redis-im image's entrypoint: starts redis-server with
# /etc/redis-im/redis.conf (the module loaded, AOF on) and a password, from
# REDIS_PASSWORD or from the file named by REDIS_PASSWORD_FILE (a Docker
# secret, e.g. /run/secrets/redis_password); without a password it refuses
# to start. Its arguments are added to redis-server's command line.
#
#   redis-im-entrypoint [redis-server options...]
#   redis-im-entrypoint healthcheck      PING with the password (HEALTHCHECK)
#
# The password goes to redis-server on its standard input, as a line of
# configuration, so that it does not show in the process list.
set -eu
conf="${REDIS_IM_CONFIG:-/etc/redis-im/redis.conf}"

if [ -n "${REDIS_PASSWORD_FILE:-}" ]; then
  password="$(cat "$REDIS_PASSWORD_FILE")"
else
  password="${REDIS_PASSWORD:-}"
fi
if [ -z "$password" ]; then
  echo "redis-im: no password: set REDIS_PASSWORD, or REDIS_PASSWORD_FILE to a file holding it; refusing to start" >&2
  exit 1
fi
case "$password" in
  *"
"*) echo "redis-im: the password must be one line" >&2; exit 1 ;;
esac

if [ "${1:-}" = healthcheck ]; then
  port="$(awk '$1 == "port" { p = $2 } END { print p ? p : 6379 }' "$conf")"
  REDISCLI_AUTH="$password" redis-cli -p "$port" ping | grep -q PONG
  exit
fi

# A double-quoted configuration string: backslashes and quotes escaped.
quoted="$(printf '%s' "$password" | sed 's/\\/\\\\/g; s/"/\\"/g')"
exec redis-server "$conf" "$@" - <<EOC
requirepass "$quoted"
EOC
