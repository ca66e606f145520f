#!/usr/bin/env python3
"""Writes the seed files of the nvmf_pdu, nvmf_cmd and nvmf_conn fuzz targets (NVMe/TCP PDU
layouts from the NVMe/TCP transport specification). Run from fuzz/."""
import struct, os

def ch(t, flags, hlen, pdo, plen):
    return struct.pack("<BBBBI", t, flags, hlen, pdo, plen)

def icreq(hpda=0, dgst=0):
    body = struct.pack("<HBBI", 0, hpda, dgst, 0)
    return (ch(0x00, 0, 128, 0, 128) + body).ljust(128, b"\0")

def sqe(opc, cid, nsid=0, cdw=(), sgl_len=0, in_capsule=False):
    b = bytearray(64)
    b[0] = opc
    b[1] = 0x40  # PSDT: SGL
    b[2:4] = struct.pack("<H", cid)
    b[4:8] = struct.pack("<I", nsid)
    # SGL data block descriptor: offset (in-capsule) or transport data block
    b[24:32] = struct.pack("<Q", 0)
    b[32:36] = struct.pack("<I", sgl_len)
    b[39] = 0x01 if in_capsule else 0x5A  # 0x01 offset-in-capsule data block, 0x5A transport SGL
    for i, v in cdw:
        b[i * 4:i * 4 + 4] = struct.pack("<I", v)
    return bytes(b)

def capsule(s, data=b""):
    hlen = 72
    pdo = 72 if data else 0
    return ch(0x04, 0, hlen, pdo, hlen + len(data)) + s + data

def connect(qid, sqsize, cntlid=0xFFFF):
    # Fabrics command (opcode 0x7F), FCTYPE 0x01 Connect at byte 4; RECFMT, QID, SQSIZE.
    s = bytearray(sqe(0x7F, 1, sgl_len=1024, in_capsule=True))
    s[4] = 0x01
    s[40:44] = struct.pack("<HH", 0, qid)
    s[44:46] = struct.pack("<H", sqsize - 1)
    data = bytearray(1024)
    data[0:16] = b"\x11" * 16
    data[16:18] = struct.pack("<H", cntlid)
    sub = b"nqn.2026-11.org.basalt:volume-1"
    host = b"nqn.2014-08.org.nvmexpress:uuid:host-1"
    data[256:256 + len(sub)] = sub
    data[512:512 + len(host)] = host
    return capsule(bytes(s), bytes(data))

def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)

read = capsule(sqe(0x02, 2, nsid=1, cdw=[(10, 0), (11, 0), (12, 7)], sgl_len=4096))
wr = capsule(sqe(0x01, 3, nsid=1, cdw=[(10, 8), (11, 0), (12, 1)], sgl_len=1024, in_capsule=True), b"\xab" * 1024)
identify = capsule(sqe(0x06, 4, cdw=[(10, 1)], sgl_len=4096))
h2c = ch(0x06, 0x04, 24, 24, 24 + 512) + struct.pack("<HHII", 5, 1, 0, 512) + b"\0" * 4 + b"\xcd" * 512

write("seeds/nvmf_pdu/icreq.bin", b"\0" + icreq())
write("seeds/nvmf_pdu/stream.bin", b"\0" + icreq() + connect(0, 32) + read + wr + h2c)
write("seeds/nvmf_cmd/read.bin", sqe(0x02, 2, nsid=1, cdw=[(10, 0), (11, 0), (12, 7)], sgl_len=4096))
write("seeds/nvmf_cmd/connect.bin", connect(0, 32)[8:])
write("seeds/nvmf_cmd/identify.bin", sqe(0x06, 4, cdw=[(10, 1)], sgl_len=4096))
write("seeds/nvmf_cmd/dsm.bin", sqe(0x09, 5, nsid=1, cdw=[(10, 0), (11, 4)], sgl_len=16, in_capsule=True) + struct.pack("<IIQ", 0, 8, 0))
write("seeds/nvmf_conn/session.bin", b"\x05" + icreq() + connect(0, 32) + identify + connect(1, 128) + read + wr)
write("seeds/nvmf_conn/digests.bin", b"\x02" + icreq(dgst=3) + connect(0, 32))
