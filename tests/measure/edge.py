"""Edge figures: 1,000 slowloris connections and 24 stalled 31 MiB uploads
against a fresh `strata serve`. Usage: python3 tests/measure/edge.py BINARY SCRATCH_DIR"""
import os, socket, sys, time, subprocess, urllib.request

binary, data = sys.argv[1], sys.argv[2]
cfg = os.path.join(data + ".toml")
open(cfg, "w").write("[lifecycle]\nscheduler = false\n")
proc = subprocess.Popen([binary, "serve", "--listen", "127.0.0.1:0", "--data-dir", data, "--config", cfg],
                        stdout=subprocess.PIPE, stderr=open(data + ".log", "w"))
url = proc.stdout.readline().decode().split()[-1]
host, port = url.split("//")[1].split(":")
port = int(port)
for _ in range(600):
    try:
        if urllib.request.urlopen(url + "/ready", timeout=2).status == 200: break
    except Exception: time.sleep(0.1)

def rss_kb():
    for line in open(f"/proc/{proc.pid}/status"):
        if line.startswith("VmRSS"): return int(line.split()[1])

def health_ms():
    t = time.time(); urllib.request.urlopen(url + "/health", timeout=30).read(); return (time.time() - t) * 1000

# 1. slowloris: 1000 connections sending a partial header.
socks = []
for i in range(1000):
    s = socket.create_connection((host, port)); s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-a: "); socks.append(s)
print(f"slowloris: 1000 open, /health {health_ms():.1f} ms while they hang")
t0 = time.time()
for s in socks: s.settimeout(30)
closed = 0
for s in socks:
    try:
        while s.recv(4096): pass
    except Exception: pass
    closed += 1
print(f"slowloris: all 1000 closed by the server after {time.time() - t0:.1f} s (header_read_timeout_ms default)")
for s in socks: s.close()

# 2. stalled bodies: 24 connections announce 32 MiB and send 31 MiB, then stall.
base = rss_kb()
chunk = b"x" * (1 << 20)
socks = []
for i in range(24):
    s = socket.create_connection((host, port))
    s.sendall(f"POST /v1/datasets/s/records HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {32 << 20}\r\n\r\n".encode())
    socks.append(s)
sent = [0] * 24
for _ in range(31):
    for i, s in enumerate(socks):
        try: s.sendall(chunk); sent[i] += 1
        except Exception: pass
peak = rss_kb()
print(f"stalled bodies: 24 x up to 31 MiB sent ({sum(sent)} MiB accepted by the kernel), server RSS {base//1024} -> {peak//1024} MiB")
t0 = time.time()
answers = []
for s in socks:
    s.settimeout(60)
    try:
        data = s.recv(200); answers.append(data.split(b"\r\n")[0].decode(errors="replace"))
    except Exception as e: answers.append(str(e))
print(f"stalled bodies: answered after {time.time() - t0:.1f} s: {sorted(set(answers))}")
for s in socks: s.close()
time.sleep(1)
print(f"stalled bodies: RSS after close {rss_kb()//1024} MiB; /health {health_ms():.1f} ms")
proc.terminate(); proc.wait()
