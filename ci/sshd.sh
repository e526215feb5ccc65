#!/usr/bin/env bash
# A throw-away OpenSSH server on 127.0.0.1 to try `--board ssh://...` without a board (bench/hil.py uses it;
# the tests start their own from a fixture).
#   bash ci/sshd.sh start DIR   -> DIR/{userkey,known_hosts,port}; prints the --board/--ssh-key/--known-hosts flags
#   bash ci/sshd.sh stop DIR
set -euo pipefail
cmd="${1:-}"; dir="${2:-}"
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: bash ci/sshd.sh start|stop DIR" >&2; exit 2; }
dir="$(mkdir -p "$dir" && cd "$dir" && pwd)"
if [ "$cmd" = "stop" ]; then
  [ -f "$dir/sshd.pid" ] && kill "$(cat "$dir/sshd.pid")" 2>/dev/null || true
  exit 0
fi
[ "$cmd" = "start" ] || { echo "usage: bash ci/sshd.sh start|stop DIR" >&2; exit 2; }
[ -x /usr/sbin/sshd ] || { echo "error: openssh-server missing; run: bash ci/install-system-deps.sh" >&2; exit 3; }
mkdir -p /run/sshd
for key in hostkey userkey; do
  [ -f "$dir/$key" ] || ssh-keygen -q -t ed25519 -N '' -f "$dir/$key"
done
cp "$dir/userkey.pub" "$dir/authorized_keys" && chmod 600 "$dir/authorized_keys"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
cat > "$dir/sshd_config" <<CFG
Port $port
ListenAddress 127.0.0.1
HostKey $dir/hostkey
AuthorizedKeysFile $dir/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
StrictModes no
UsePAM no
PermitRootLogin prohibit-password
PidFile $dir/sshd.pid
Subsystem sftp internal-sftp
CFG
echo "[127.0.0.1]:$port $(cut -d' ' -f1,2 "$dir/hostkey.pub")" > "$dir/known_hosts"
echo "$port" > "$dir/port"
/usr/sbin/sshd -f "$dir/sshd_config" -E "$dir/sshd.log"
for _ in $(seq 50); do
  [ -f "$dir/sshd.pid" ] && break
  sleep 0.1
done
echo "--board ssh://$(id -un)@127.0.0.1:$port --ssh-key $dir/userkey --known-hosts $dir/known_hosts"
