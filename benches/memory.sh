#!/usr/bin/env bash
# Memory of the release binary on the local backend over TLS: RSS idle, with N idle TLS
# connections open (handshake done, no request), and the curve over many first issuances
# (fresh cluster ID and P-256 CSR each, wrk keep-alive, c=8), sampled every STEP issuances.
#
# usage: benches/memory.sh PATH/TO/liqo-auth [IDLE_CONNECTIONS] [ISSUANCES] [STEP]
# needs: wrk (Debian wrk), python3 with `cryptography`. Not part of CI (a load test).
set -euo pipefail
bin=$(realpath "$1"); conns=${2:-4096}; total=${3:-100000}; step=${4:-10000}
command -v wrk >/dev/null || { apt-get update -qq >/dev/null; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
python3 -c 'import cryptography' 2>/dev/null || pip install -q cryptography
ulimit -n $((conns + 1024)) 2>/dev/null || ulimit -n "$(ulimit -Hn)"
work=$(mktemp -d); pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
port=$((30000 + RANDOM % 5000))
"$bin" serve --backend local --data-dir "$work/data" --address "127.0.0.1:$port" --enable-tls \
  --metrics-address off --log-level warn --max-connections $((conns + 64)) --max-connections-per-source 0 >"$work/server.log" 2>&1 & pids+=($!)
pid=${pids[0]}
for _ in $(seq 100); do curl -skf "https://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
rss() { awk '/VmRSS/ {print $2}' "/proc/$pid/status"; }
sleep 1
echo "RSS idle: $(rss) KiB"

# Idle TLS connections: handshakes done, nothing sent; RSS read while all are open.
python3 - "$port" "$conns" "$pid" <<'PY'
import socket, ssl, sys, time
port, n, pid = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
socks = []
start = time.time()
for i in range(n):
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="localhost")
    socks.append(s)
took = time.time() - start
rss = [l.split()[1] for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS")][0]
alive = 0
for s in socks:
    s.setblocking(False)
    try:
        alive += 1 if s.recv(1) != b"" else 0
    except (ssl.SSLWantReadError, BlockingIOError):
        alive += 1
    except OSError:
        pass
print(f"RSS with {n} idle TLS connections open ({alive} still open, opened in {took:.1f}s): {rss} KiB")
for s in socks:
    s.close()
PY
sleep 2
echo "RSS 2 s after closing them: $(rss) KiB"
sleep 10  # serve hands freed heap pages back every 10 s (src/main.rs, mod heap)
echo "RSS 12 s after closing them: $(rss) KiB"

# Issuance curve.
token=$("$bin" token show --backend local --data-dir "$work/data" 2>/dev/null | tail -1)
python3 - "$work" "$token" "$total" <<'PY'
import base64, json, sys, uuid
from cryptography import x509
from cryptography.x509.oid import NameOID
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
work, token, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
key = ec.generate_private_key(ec.SECP256R1())
with open(f"{work}/bodies.lua", "w") as f:
    f.write("local bodies = {\n")
    for _ in range(n):
        cid = str(uuid.uuid4())
        csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([
            x509.NameAttribute(NameOID.COMMON_NAME, cid),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "liqo.io")])).sign(key, hashes.SHA256())
        body = json.dumps({"cluster": {"clusterID": cid, "clusterName": "bench"}, "destinationClusterToken": token,
                           "certificateSigningRequest": base64.b64encode(csr.public_bytes(serialization.Encoding.PEM)).decode()})
        f.write("[==[" + body + "]==],\n")
    # One wrk thread takes the bodies in order (then repeats them, idempotently, until stopped).
    f.write("}\nlocal i = 0\nwrk.method = 'POST'\nwrk.headers['Content-Type'] = 'application/json'\n"
            "request = function()\n  i = i + 1\n  if i > #bodies then i = 1 end\n"
            "  return wrk.format('POST', '/identity/certificate', nil, bodies[i])\nend\n")
PY
wrk -t1 -c8 -d3600s -s "$work/bodies.lua" "https://127.0.0.1:$port" >"$work/wrk.log" 2>&1 & wrk_pid=$!; pids+=($wrk_pid)
next=$step
printf 'issued\tRSS KiB\n0\t%s\n' "$(rss)"
while kill -0 "$wrk_pid" 2>/dev/null; do
  done_n=$( (find "$work/data/peers" -maxdepth 1 -name '*.json' 2>/dev/null || true) | wc -l)
  if (( done_n >= next )); then printf '%s\t%s\n' "$done_n" "$(rss)"; next=$((next + step)); fi
  if (( done_n >= total )); then kill -INT "$wrk_pid" 2>/dev/null || true; sleep 1; break; fi
  sleep 0.5
done
sleep 1
printf '%s\t%s (end)\n' "$(find "$work/data/peers" -maxdepth 1 -name '*.json' | wc -l)" "$(rss)"
grep -E 'Requests/sec|Non-2xx' "$work/wrk.log" || true
