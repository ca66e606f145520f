#!/usr/bin/env python3
"""Writes the seed files of the iscsi_pdu, iscsi_text, iscsi_conn and scsi_cdb fuzz targets.

Run from fuzz/: python3 seeds/gen_iscsi_seeds.py. The PDUs follow RFC 7143 layouts.
"""
import struct, os

def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF

def pad(b):
    return b + b"\0" * (-len(b) % 4)

def text(pairs):
    return b"".join(f"{k}={v}".encode() + b"\0" for k, v in pairs)

def pdu(bhs, data=b"", hd=False, dd=False):
    assert len(bhs) == 48
    bhs = bytearray(bhs)
    bhs[5:8] = len(data).to_bytes(3, "big")
    out = bytes(bhs)
    if hd:
        out += struct.pack("<I", crc32c(out))
    if data:
        out += pad(data)
        if dd:
            out += struct.pack("<I", crc32c(pad(data)))
    return out

ISID = bytes([0x80, 0, 0, 0x12, 0x34, 0x56])

def login_pdu(pairs, csg, nsg, transit=True):
    b = bytearray(48)
    b[0] = 0x43
    b[1] = (0x80 if transit else 0) | (csg << 2) | nsg
    b[8:14] = ISID
    b[24:28] = struct.pack(">I", 1)  # CmdSN: the session's first command uses 1 too
    return pdu(b, text(pairs))

def login(target, session="Normal", auth="None", extra=()):
    """Security stage (names, AuthMethod), then, unless CHAP is asked for, the operational
    stage into full feature phase."""
    names = [("InitiatorName", "iqn.2026-11.test:fuzz"), ("SessionType", session)]
    if target:
        names.append(("TargetName", target))
    sec = login_pdu(names + [("AuthMethod", auth)], 0, 1, transit=(auth == "None"))
    if auth != "None":
        return sec + login_pdu([("CHAP_A", "5")], 0, 1, transit=False)
    ops = [("HeaderDigest", "None"), ("DataDigest", "None"), ("ImmediateData", "Yes"),
           ("InitialR2T", "No"), ("MaxRecvDataSegmentLength", "262144")] + list(extra)
    return sec + login_pdu(ops, 1, 3)

def scsi_cmd(itt, cmdsn, cdb, edtl, read=False, write=False, data=b"", lun=0):
    b = bytearray(48)
    b[0] = 0x01
    b[1] = 0x80 | (0x40 if read else 0) | (0x20 if write else 0) | 1  # F, R, W, SIMPLE
    b[8:16] = struct.pack(">Q", lun << 48)
    b[16:20] = struct.pack(">I", itt)
    b[20:24] = struct.pack(">I", edtl)
    b[24:28] = struct.pack(">I", cmdsn)
    b[28:32] = struct.pack(">I", 1)
    b[32:32 + len(cdb)] = cdb
    return pdu(b, data)

def nop_out(itt, cmdsn, data=b""):
    b = bytearray(48)
    b[0] = 0x00 | 0x40
    b[1] = 0x80
    b[16:20] = struct.pack(">I", itt)
    b[20:24] = struct.pack(">I", 0xFFFFFFFF)
    b[24:28] = struct.pack(">I", cmdsn)
    return pdu(b, data)

def data_out(itt, ttt, offset, data, final=True, datasn=0):
    b = bytearray(48)
    b[0] = 0x05
    b[1] = 0x80 if final else 0
    b[16:20] = struct.pack(">I", itt)
    b[20:24] = struct.pack(">I", ttt)
    b[36:40] = struct.pack(">I", datasn)
    b[40:44] = struct.pack(">I", offset)
    return pdu(b, data)

def logout(itt, cmdsn):
    b = bytearray(48)
    b[0] = 0x06 | 0x40
    b[1] = 0x80
    b[16:20] = struct.pack(">I", itt)
    b[24:28] = struct.pack(">I", cmdsn)
    return pdu(b)

def tmf(itt, cmdsn, func, ref=0):
    b = bytearray(48)
    b[0] = 0x02 | 0x40
    b[1] = 0x80 | func
    b[16:20] = struct.pack(">I", itt)
    b[20:24] = struct.pack(">I", ref)
    b[24:28] = struct.pack(">I", cmdsn)
    return pdu(b)

def text_req(itt, cmdsn, pairs):
    b = bytearray(48)
    b[0] = 0x04 | 0x40
    b[1] = 0x80
    b[16:20] = struct.pack(">I", itt)
    b[20:24] = struct.pack(">I", 0xFFFFFFFF)
    b[24:28] = struct.pack(">I", cmdsn)
    return pdu(b, text(pairs))

READ10 = bytes([0x28, 0, 0, 0, 0, 8, 0, 0, 8, 0])
WRITE10 = bytes([0x2A, 0, 0, 0, 0, 16, 0, 0, 8, 0])
WRITE10_BIG = bytes([0x2A, 0, 0, 0, 1, 0, 0, 0, 0x80, 0])
INQUIRY = bytes([0x12, 0, 0, 0, 96, 0])

def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)

T = "iqn.2026-11.org.basalt:open"
write("seeds/iscsi_pdu/login.bin", b"\0" + login(T))
write("seeds/iscsi_pdu/read10.bin", b"\0" + scsi_cmd(1, 1, READ10, 4096, read=True))
write("seeds/iscsi_pdu/write10-immediate.bin", b"\0" + scsi_cmd(2, 1, WRITE10, 4096, write=True, data=bytes(range(256)) * 16))
write("seeds/iscsi_pdu/read10-digests.bin", b"\3" + pdu(scsi_cmd(1, 1, READ10, 4096, read=True)[:48], b"", hd=True, dd=True))
write("seeds/iscsi_pdu/data-out-digests.bin", b"\3" + pdu(data_out(2, 5, 0, b"x" * 1000)[:48], b"x" * 1000, hd=True, dd=True))
write("seeds/iscsi_pdu/nop-out.bin", b"\0" + nop_out(3, 1, b"ping"))
write("seeds/iscsi_pdu/tmf-abort.bin", b"\0" + tmf(4, 1, 1, ref=2))

write("seeds/iscsi_text/login.bin", text([("InitiatorName", "iqn.2026-11.test:fuzz"), ("TargetName", T), ("MaxRecvDataSegmentLength", "262144"), ("HeaderDigest", "CRC32C,None")]))
write("seeds/iscsi_text/chap.bin", text([("CHAP_A", "5,6,7"), ("CHAP_N", "alice"), ("CHAP_R", "0x" + "ab" * 16), ("CHAP_C", "0b" + "AQIDBA==")]))
write("seeds/iscsi_text/send-targets.bin", text([("SendTargets", "All"), ("X-com.example.key", "v"), ("DefaultTime2Wait", "2")]))

conv = login(T)
conv += scsi_cmd(1, 1, INQUIRY, 96, read=True)
conv += scsi_cmd(2, 2, READ10, 4096, read=True)
conv += scsi_cmd(3, 3, WRITE10, 4096, write=True, data=b"\xa5" * 4096)
conv += scsi_cmd(4, 4, WRITE10_BIG, 65536 * 2, write=True, data=b"\x5a" * 8192)
# The rest answers the target's first R2T (its TTT is 1 in a fresh connection).
conv += data_out(4, 1, 8192, b"\x11" * (131072 - 8192), final=True)
conv += nop_out(5, 5, b"hello")
conv += text_req(6, 5, [("SendTargets", "All")])
conv += tmf(7, 5, 1, ref=4)
conv += logout(8, 5)
write("seeds/iscsi_conn/conversation.bin", b"\x07" + conv)
write("seeds/iscsi_conn/login-chap.bin", b"\x00" + login("iqn.2026-11.org.basalt:chap", auth="CHAP"))
write("seeds/iscsi_conn/login-acl.bin", b"\x03" + login("iqn.2026-11.org.basalt:acl"))
write("seeds/iscsi_conn/discovery.bin", b"\x01" + login(None, session="Discovery") + text_req(1, 1, [("SendTargets", "All")]))

for name, cdb in [("read10", READ10), ("write16", bytes([0x8A, 8] + [0] * 7 + [16, 0, 0, 0, 8, 0, 0])),
                  ("inquiry-vpd83", bytes([0x12, 1, 0x83, 0, 255, 0])), ("unmap", bytes([0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0])),
                  ("compare-and-write", bytes([0x89, 0] + [0] * 8 + [0, 0, 0, 1, 0, 0])),
                  ("persistent-reserve-out", bytes([0x5F, 1, 0, 0, 0, 0, 0, 0, 24, 0])),
                  ("mode-sense10", bytes([0x5A, 0, 0x3F, 0, 0, 0, 0, 0x10, 0, 0])),
                  ("report-opcodes", bytes([0xA3, 0x0C, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0]))]:
    write(f"seeds/scsi_cdb/{name}.bin", cdb)
