#!/usr/bin/env python3
"""Microsecond-resolution REGISTER latency probe for scripts/bench-register.sh.

SIPp 3.6.1 stamps its rtd timers with a millisecond scheduler clock, which on loopback only
says "0 ms" or "4 ms". This probe runs *next to* the SIPp load at a low rate: one UDP client
doing REGISTER -> 401 -> REGISTER(MD5 digest, qop=auth) -> 200 sequentially, timing each
exchange with time.perf_counter_ns() from the send to the matching response, and prints

  probe ok=N fail=F challenge_p50_us=.. challenge_p99_us=.. register_p50_us=.. register_p99_us=.. register_max_us=..

Usage: latency_probe.py HOST:PORT USER PASSWORD RATE DURATION_S
Standard library only.
"""
import hashlib
import os
import random
import re
import socket
import sys
import time


def md5(s):
    return hashlib.md5(s.encode()).hexdigest()


def pct(values, p):
    if not values:
        return "NA"
    v = sorted(values)
    i = max(0, min(len(v) - 1, int(len(v) * p / 100.0 + 0.999999) - 1))
    return "%d" % (v[i] // 1000)


def main():
    target, user, password, rate, duration = sys.argv[1:6]
    host, port = target.rsplit(":", 1)
    port = int(port)
    rate = float(rate)
    duration = float(duration)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.connect((host, port))
    lport = sock.getsockname()[1]
    ruri = "sip:%s:%d" % (host, port)
    call_id = "%016x@latency-probe" % random.getrandbits(64)
    tag = "%08x" % random.getrandbits(32)
    state = {"cseq": 0}

    def request(extra):
        state["cseq"] += 1
        msg = (
            "REGISTER %s SIP/2.0\r\n"
            "Via: SIP/2.0/UDP 127.0.0.1:%d;branch=z9hG4bK%016x;rport\r\n"
            "Max-Forwards: 70\r\n"
            "From: <sip:%s@%s>;tag=%s\r\n"
            "To: <sip:%s@%s>\r\n"
            "Call-ID: %s\r\n"
            "CSeq: %d REGISTER\r\n"
            "Contact: <sip:%s@127.0.0.1:%d>\r\n"
            "Expires: 3600\r\n"
            "%s"
            "Content-Length: 0\r\n\r\n"
        ) % (ruri, lport, random.getrandbits(64), user, host, tag, user, host, call_id,
             state["cseq"], user, lport, extra)
        return msg.encode(), state["cseq"]

    def exchange(msg, cseq, deadline_s=1.0):
        """Returns (elapsed_ns, response text) or (None, None) on timeout."""
        t0 = time.perf_counter_ns()
        sock.send(msg)
        end = time.monotonic() + deadline_s
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return None, None
            sock.settimeout(left)
            try:
                data = sock.recv(65535)
            except socket.timeout:
                return None, None
            t1 = time.perf_counter_ns()
            text = data.decode("latin-1")
            m = re.search(r"^CSeq:\s*(\d+)", text, re.M | re.I)
            if m and int(m.group(1)) == cseq:
                return t1 - t0, text

    challenge_ns, register_ns = [], []
    ok = fail = 0
    interval = 1.0 / rate
    start = time.monotonic()
    next_at = start
    while time.monotonic() - start < duration:
        now = time.monotonic()
        if now < next_at:
            time.sleep(next_at - now)
        next_at += interval
        msg, cseq = request("")
        dt1, resp = exchange(msg, cseq)
        if resp is None or not resp.startswith("SIP/2.0 401"):
            fail += 1
            continue
        chal = None
        for line in resp.split("\r\n"):
            if line.lower().startswith("www-authenticate:") and (
                "algorithm" not in line.lower() or re.search(r"algorithm=\"?MD5\"?[,\s]|algorithm=\"?MD5\"?$", line, re.I)
            ):
                chal = line
                break
        if chal is None:
            fail += 1
            continue
        params = dict((k.lower(), v.strip('"')) for k, v in re.findall(r'(\w+)=("[^"]*"|[^,\s]+)', chal))
        realm, nonce = params.get("realm", ""), params.get("nonce", "")
        ha1 = md5("%s:%s:%s" % (user, realm, password))
        ha2 = md5("REGISTER:%s" % ruri)
        cnonce = "%016x" % random.getrandbits(64)
        nc = "00000001"
        response = md5("%s:%s:%s:%s:auth:%s" % (ha1, nonce, nc, cnonce, ha2))
        auth = (
            'Authorization: Digest username="%s", realm="%s", nonce="%s", uri="%s", '
            'algorithm=MD5, qop=auth, nc=%s, cnonce="%s", response="%s"\r\n'
        ) % (user, realm, nonce, ruri, nc, cnonce, response)
        if "opaque" in params:
            auth = auth[:-2] + ', opaque="%s"\r\n' % params["opaque"]
        msg, cseq = request(auth)
        dt2, resp = exchange(msg, cseq)
        if resp is None or not resp.startswith("SIP/2.0 200"):
            fail += 1
            continue
        ok += 1
        challenge_ns.append(dt1)
        register_ns.append(dt2)
    print(
        "probe ok=%d fail=%d challenge_p50_us=%s challenge_p99_us=%s register_p50_us=%s "
        "register_p99_us=%s register_max_us=%s"
        % (ok, fail, pct(challenge_ns, 50), pct(challenge_ns, 99), pct(register_ns, 50),
           pct(register_ns, 99), pct(register_ns, 100))
    )
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
