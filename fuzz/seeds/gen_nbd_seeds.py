#!/usr/bin/env python3
"""Writes the seed files of the nbd_conn fuzz target (the NBD protocol's handshake and
transmission messages, from the NBD project's doc/proto.md). Run from fuzz/.

Each seed starts with the target's control byte (chunk size in the low 6 bits; bit 6: answer
every other command with an error; bit 7: small limits), then the client's bytes."""
import struct, os

IHAVEOPT = 0x49484156454F5054
REQ = 0x25609513

def opt(o, data=b""):
    return struct.pack(">QII", IHAVEOPT, o, len(data)) + data

def info(name, reqs=()):
    n = name.encode()
    return struct.pack(">I", len(n)) + n + struct.pack(">H", len(reqs)) + b"".join(struct.pack(">H", r) for r in reqs)

def meta(name, queries):
    n = name.encode()
    b = struct.pack(">I", len(n)) + n + struct.pack(">I", len(queries))
    for q in queries:
        b += struct.pack(">I", len(q)) + q.encode()
    return b

def req(cmd, cookie, offset=0, length=0, flags=0, data=b""):
    return struct.pack(">IHHQQI", REQ, flags, cmd, cookie, offset, length) + data

FLAGS = struct.pack(">I", 3)  # C_FIXED_NEWSTYLE | C_NO_ZEROES

def commands():
    b = b""
    b += req(1, 1, 0, 4096, 1, b"\xab" * 4096)        # WRITE FUA
    b += req(0, 2, 0, 4096)                            # READ
    b += req(0, 3, 4096, 8192, 4)                      # READ DF
    b += req(3, 4)                                     # FLUSH
    b += req(4, 5, 8192, 4096)                         # TRIM
    b += req(6, 6, 12288, 4096, 2)                     # WRITE_ZEROES NO_HOLE
    b += req(5, 7, 0, 65536)                           # CACHE
    b += req(7, 8, 0, 1 << 20, 8)                      # BLOCK_STATUS REQ_ONE
    b += req(0, 9, 1 << 20, 512)                       # READ past the end: EINVAL
    b += req(1, 10, (1 << 20) - 512, 1024, 0, b"\0" * 1024)  # WRITE past the end: ENOSPC
    b += req(0, 11, 100, 512)                          # unaligned: EINVAL
    b += req(99, 12)                                   # unknown command
    b += req(2, 13)                                    # DISC
    return b

seeds = {
    # Structured replies, base:allocation, GO with every info, then every command.
    "structured.bin": bytes([0x3f]) + FLAGS + opt(8) + opt(10, meta("vol", ["base:allocation"]))
        + opt(6, info("vol", (0, 1, 2, 3))) + opt(7, info("vol", (3,))) + commands(),
    # Simple replies through EXPORT_NAME, answered with errors every other time.
    "simple.bin": bytes([0x40 | 0x07]) + FLAGS + opt(1, b"vol") + commands(),
    # Every option, unknown ones, then ABORT.
    "options.bin": bytes([0x01]) + FLAGS + opt(3) + opt(3, b"x") + opt(5) + opt(4, b"peek")
        + opt(11) + opt(0x1234, b"junk") + opt(9, meta("vol", [])) + opt(8)
        + opt(9, meta("vol", ["base:", "qemu:dirty-bitmap:x"])) + opt(10, meta("nope", ["base:allocation"]))
        + opt(6, info("nope")) + opt(6, b"\0\0\0\x09\0\0") + opt(2),
    # A read-only export with small limits: writes refused, back-pressure on.
    "readonly.bin": bytes([0x80 | 0x02]) + FLAGS + opt(7, info("ro")) + commands(),
}

os.makedirs("seeds/nbd_conn", exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join("seeds/nbd_conn", name), "wb") as f:
        f.write(data)
    print(name, len(data))
