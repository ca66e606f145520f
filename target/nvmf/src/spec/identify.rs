//! Identify data structures (NVMe Base 2.0 §5.17.2, NVM Command Set 1.0 §4.1.5) and log pages
//! (Base §5.16.1, Fabrics §5.4 discovery log), with encoders for the target and decoders for the
//! host. Decoders read fixed offsets from buffers that may be short and never panic.

/// Identify CNS: namespace.
pub const CNS_NAMESPACE: u8 = 0x00;
/// Identify CNS: controller.
pub const CNS_CONTROLLER: u8 = 0x01;
/// Identify CNS: active namespace id list.
pub const CNS_ACTIVE_NS_LIST: u8 = 0x02;
/// Identify CNS: namespace identification descriptor list.
pub const CNS_NS_DESC_LIST: u8 = 0x03;

/// Size of Identify data and of most log pages used here.
pub const IDENTIFY_LEN: usize = 4096;

/// Controller type: I/O controller.
pub const CNTRLTYPE_IO: u8 = 1;
/// Controller type: discovery controller.
pub const CNTRLTYPE_DISCOVERY: u8 = 2;

fn put_str(b: &mut [u8], at: usize, len: usize, s: &str) {
    let field = &mut b[at..at + len];
    field.fill(b' ');
    let n = s.len().min(len);
    field[..n].copy_from_slice(&s.as_bytes()[..n]);
}

fn put_nqn(b: &mut [u8], at: usize, s: &str) {
    let field = &mut b[at..at + 256];
    field.fill(0);
    let n = s.len().min(255);
    field[..n].copy_from_slice(&s.as_bytes()[..n]);
}

fn get(b: &[u8], at: usize, len: usize) -> &[u8] {
    b.get(at..at.saturating_add(len)).unwrap_or(&[])
}

fn get_u16(b: &[u8], at: usize) -> u16 {
    let s = get(b, at, 2);
    if s.len() == 2 {
        u16::from_le_bytes([s[0], s[1]])
    } else {
        0
    }
}

fn get_u32(b: &[u8], at: usize) -> u32 {
    let s = get(b, at, 4);
    let mut v = [0u8; 4];
    if s.len() == 4 {
        v.copy_from_slice(s);
    }
    u32::from_le_bytes(v)
}

fn get_u64(b: &[u8], at: usize) -> u64 {
    let s = get(b, at, 8);
    let mut v = [0u8; 8];
    if s.len() == 8 {
        v.copy_from_slice(s);
    }
    u64::from_le_bytes(v)
}

fn get_str(b: &[u8], at: usize, len: usize) -> String {
    String::from_utf8_lossy(get(b, at, len))
        .trim_end_matches([' ', '\0'])
        .to_owned()
}

/// The Identify Controller fields this implementation fills in or reads.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IdentifyController {
    /// PCI vendor id (0 on fabrics is allowed; we use 0).
    pub vid: u16,
    /// Serial number (20 ASCII).
    pub serial: String,
    /// Model number (40 ASCII).
    pub model: String,
    /// Firmware revision (8 ASCII).
    pub firmware: String,
    /// Maximum data transfer size, as a power of two of the minimum page size (4 KiB).
    pub mdts: u8,
    /// Controller id.
    pub cntlid: u16,
    /// Version (e.g. 0x0001_0400 for 1.4).
    pub ver: u32,
    /// Optional asynchronous events supported (bit 8: namespace attribute notices).
    pub oaes: u32,
    /// Controller type.
    pub cntrltype: u8,
    /// Abort command limit (0-based).
    pub acl: u8,
    /// Asynchronous event request limit (0-based).
    pub aerl: u8,
    /// Firmware updates (bit 0: slot 1 read-only; bits 1-3: slots).
    pub frmw: u8,
    /// Log page attributes.
    pub lpa: u8,
    /// Error log page entries (0-based).
    pub elpe: u8,
    /// Keep alive support granularity in 100 ms units (0: not supported).
    pub kas: u16,
    /// Maximum outstanding commands.
    pub maxcmd: u16,
    /// Number of namespaces (highest NSID).
    pub nn: u32,
    /// Optional NVM command support (bit 0 compare, 2 DSM, 3 write zeroes).
    pub oncs: u16,
    /// Volatile write cache present.
    pub vwc: u8,
    /// SGL support.
    pub sgls: u32,
    /// Subsystem NQN.
    pub subnqn: String,
    /// I/O queue command capsule supported size in 16-byte units.
    pub ioccsz: u32,
    /// I/O queue response capsule supported size in 16-byte units.
    pub iorcsz: u32,
    /// In-capsule data offset (16-byte units).
    pub icdoff: u16,
    /// Maximum SGL data block descriptors.
    pub msdbd: u8,
}

impl IdentifyController {
    /// The 4096 wire bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; IDENTIFY_LEN];
        b[0..2].copy_from_slice(&self.vid.to_le_bytes());
        b[2..4].copy_from_slice(&self.vid.to_le_bytes());
        put_str(&mut b, 4, 20, &self.serial);
        put_str(&mut b, 24, 40, &self.model);
        put_str(&mut b, 64, 8, &self.firmware);
        b[72] = 6; // recommended arbitration burst
        b[76] = 0x03; // CMIC: multiple ports / controllers may share the subsystem
        b[77] = self.mdts;
        b[78..80].copy_from_slice(&self.cntlid.to_le_bytes());
        b[80..84].copy_from_slice(&self.ver.to_le_bytes());
        b[92..96].copy_from_slice(&self.oaes.to_le_bytes());
        b[111] = self.cntrltype;
        b[258] = self.acl;
        b[259] = self.aerl;
        b[260] = self.frmw;
        b[261] = self.lpa;
        b[262] = self.elpe;
        // WCTEMP / CCTEMP: 343 K / 373 K.
        b[266..268].copy_from_slice(&343u16.to_le_bytes());
        b[268..270].copy_from_slice(&373u16.to_le_bytes());
        b[320..322].copy_from_slice(&self.kas.to_le_bytes());
        b[512] = 0x66; // SQES: 64-byte entries
        b[513] = 0x44; // CQES: 16-byte entries
        b[514..516].copy_from_slice(&self.maxcmd.to_le_bytes());
        b[516..520].copy_from_slice(&self.nn.to_le_bytes());
        b[520..522].copy_from_slice(&self.oncs.to_le_bytes());
        b[525] = self.vwc;
        b[536..540].copy_from_slice(&self.sgls.to_le_bytes());
        put_nqn(&mut b, 768, &self.subnqn);
        b[1792..1796].copy_from_slice(&self.ioccsz.to_le_bytes());
        b[1796..1800].copy_from_slice(&self.iorcsz.to_le_bytes());
        b[1800..1802].copy_from_slice(&self.icdoff.to_le_bytes());
        b[1803] = self.msdbd;
        // Power state 0: 25 W maximum (MP in 0.01 W units).
        b[2048..2050].copy_from_slice(&2500u16.to_le_bytes());
        b
    }

    /// Reads the fields back from wire bytes (the host side).
    pub fn decode(b: &[u8]) -> IdentifyController {
        IdentifyController {
            vid: get_u16(b, 0),
            serial: get_str(b, 4, 20),
            model: get_str(b, 24, 40),
            firmware: get_str(b, 64, 8),
            mdts: get(b, 77, 1).first().copied().unwrap_or(0),
            cntlid: get_u16(b, 78),
            ver: get_u32(b, 80),
            oaes: get_u32(b, 92),
            cntrltype: get(b, 111, 1).first().copied().unwrap_or(0),
            acl: get(b, 258, 1).first().copied().unwrap_or(0),
            aerl: get(b, 259, 1).first().copied().unwrap_or(0),
            frmw: get(b, 260, 1).first().copied().unwrap_or(0),
            lpa: get(b, 261, 1).first().copied().unwrap_or(0),
            elpe: get(b, 262, 1).first().copied().unwrap_or(0),
            kas: get_u16(b, 320),
            maxcmd: get_u16(b, 514),
            nn: get_u32(b, 516),
            oncs: get_u16(b, 520),
            vwc: get(b, 525, 1).first().copied().unwrap_or(0),
            sgls: get_u32(b, 536),
            subnqn: get_str(b, 768, 256),
            ioccsz: get_u32(b, 1792),
            iorcsz: get_u32(b, 1796),
            icdoff: get_u16(b, 1800),
            msdbd: get(b, 1803, 1).first().copied().unwrap_or(0),
        }
    }
}

/// The Identify Namespace fields this implementation fills in or reads.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IdentifyNamespace {
    /// Namespace size in blocks.
    pub nsze: u64,
    /// Namespace capacity in blocks.
    pub ncap: u64,
    /// Namespace utilisation in blocks.
    pub nuse: u64,
    /// Features (bit 0: thin provisioning; bit 2: DAE).
    pub nsfeat: u8,
    /// Deallocate logical block features (bits 0-2 = 1: reads return zeros; bit 3: write
    /// zeroes may deallocate).
    pub dlfeat: u8,
    /// Namespace globally unique identifier.
    pub nguid: [u8; 16],
    /// IEEE extended unique identifier.
    pub eui64: [u8; 8],
    /// log2 of the block size (LBA format 0).
    pub lbads: u8,
}

impl IdentifyNamespace {
    /// The 4096 wire bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; IDENTIFY_LEN];
        b[0..8].copy_from_slice(&self.nsze.to_le_bytes());
        b[8..16].copy_from_slice(&self.ncap.to_le_bytes());
        b[16..24].copy_from_slice(&self.nuse.to_le_bytes());
        b[24] = self.nsfeat;
        b[25] = 0; // NLBAF: one format
        b[26] = 0; // FLBAS: format 0, no metadata
        b[30] = 1; // NMIC: may be shared
        b[33] = self.dlfeat;
        b[104..120].copy_from_slice(&self.nguid);
        b[120..128].copy_from_slice(&self.eui64);
        b[130] = self.lbads;
        b
    }

    /// Reads the fields back (the host side).
    pub fn decode(b: &[u8]) -> IdentifyNamespace {
        let mut nguid = [0u8; 16];
        if let Some(s) = b.get(104..120) {
            nguid.copy_from_slice(s);
        }
        let mut eui64 = [0u8; 8];
        if let Some(s) = b.get(120..128) {
            eui64.copy_from_slice(s);
        }
        let flbas = usize::from(get(b, 26, 1).first().copied().unwrap_or(0) & 0xF);
        IdentifyNamespace {
            nsze: get_u64(b, 0),
            ncap: get_u64(b, 8),
            nuse: get_u64(b, 16),
            nsfeat: get(b, 24, 1).first().copied().unwrap_or(0),
            dlfeat: get(b, 33, 1).first().copied().unwrap_or(0),
            nguid,
            eui64,
            lbads: get(b, 130 + 4 * flbas, 1).first().copied().unwrap_or(0),
        }
    }
}

/// Namespace identification descriptor types.
pub mod nidt {
    /// IEEE EUI-64 (8 bytes).
    pub const EUI64: u8 = 1;
    /// NGUID (16 bytes).
    pub const NGUID: u8 = 2;
    /// UUID (16 bytes).
    pub const UUID: u8 = 3;
    /// Command set identifier (1 byte).
    pub const CSI: u8 = 4;
}

/// Encodes a namespace identification descriptor list (4096 bytes).
pub fn encode_ns_descriptors(descs: &[(u8, &[u8])]) -> Vec<u8> {
    let mut b = Vec::with_capacity(IDENTIFY_LEN);
    for (t, v) in descs {
        b.push(*t);
        b.push(u8::try_from(v.len()).unwrap_or(u8::MAX));
        b.extend_from_slice(&[0, 0]);
        b.extend_from_slice(v);
    }
    b.resize(IDENTIFY_LEN, 0);
    b
}

/// Decodes a namespace identification descriptor list into (type, value) pairs.
pub fn decode_ns_descriptors(b: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while let Some(&[t, l, _, _]) = b.get(at..at + 4).and_then(|s| <&[u8; 4]>::try_from(s).ok()) {
        if t == 0 {
            break;
        }
        let Some(v) = b.get(at + 4..at + 4 + usize::from(l)) else {
            break;
        };
        out.push((t, v.to_vec()));
        at += 4 + usize::from(l);
    }
    out
}

/// Encodes a list of NSIDs (active namespace list, changed namespace list): 1024 u32s.
pub fn encode_nsid_list(ids: &[u32]) -> Vec<u8> {
    let mut b = vec![0u8; IDENTIFY_LEN];
    if ids.len() > 1024 {
        b[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        return b;
    }
    for (i, id) in ids.iter().enumerate() {
        b[i * 4..i * 4 + 4].copy_from_slice(&id.to_le_bytes());
    }
    b
}

/// Decodes an NSID list (stops at the first zero).
pub fn decode_nsid_list(b: &[u8]) -> Vec<u32> {
    b.chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .take_while(|&v| v != 0)
        .collect()
}

/// Transport type TCP.
pub const TRTYPE_TCP: u8 = 3;
/// Address family IPv4.
pub const ADRFAM_IPV4: u8 = 1;
/// Address family IPv6.
pub const ADRFAM_IPV6: u8 = 2;
/// Subsystem type: NVM subsystem.
pub const SUBTYPE_NVM: u8 = 2;
/// Subsystem type: current discovery subsystem.
pub const SUBTYPE_CURRENT_DISCOVERY: u8 = 3;

/// One discovery log page entry (1024 bytes on the wire).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryEntry {
    /// Transport type.
    pub trtype: u8,
    /// Address family.
    pub adrfam: u8,
    /// Subsystem type.
    pub subtype: u8,
    /// Transport requirements.
    pub treq: u8,
    /// Port id.
    pub portid: u16,
    /// Controller id (0xFFFF: dynamic).
    pub cntlid: u16,
    /// Admin maximum SQ size.
    pub asqsz: u16,
    /// Transport service id (TCP port, as text).
    pub trsvcid: String,
    /// Subsystem NQN.
    pub subnqn: String,
    /// Transport address (IP address, as text).
    pub traddr: String,
    /// TCP security type (TSAS byte 0; 0 = none).
    pub sectype: u8,
}

/// Size of the discovery log page header.
pub const DISCOVERY_HDR_LEN: usize = 1024;
/// Size of one discovery log entry.
pub const DISCOVERY_ENTRY_LEN: usize = 1024;

/// Encodes a whole discovery log page.
pub fn encode_discovery_log(genctr: u64, entries: &[DiscoveryEntry]) -> Vec<u8> {
    let mut b = vec![0u8; DISCOVERY_HDR_LEN + DISCOVERY_ENTRY_LEN * entries.len()];
    b[0..8].copy_from_slice(&genctr.to_le_bytes());
    b[8..16].copy_from_slice(&(entries.len() as u64).to_le_bytes());
    for (i, e) in entries.iter().enumerate() {
        let o = DISCOVERY_HDR_LEN + i * DISCOVERY_ENTRY_LEN;
        let x = &mut b[o..o + DISCOVERY_ENTRY_LEN];
        x[0] = e.trtype;
        x[1] = e.adrfam;
        x[2] = e.subtype;
        x[3] = e.treq;
        x[4..6].copy_from_slice(&e.portid.to_le_bytes());
        x[6..8].copy_from_slice(&e.cntlid.to_le_bytes());
        x[8..10].copy_from_slice(&e.asqsz.to_le_bytes());
        put_str(x, 32, 32, &e.trsvcid);
        put_nqn(x, 256, &e.subnqn);
        put_str(x, 512, 256, &e.traddr);
        x[768] = e.sectype;
    }
    b
}

/// Decodes a discovery log page: (generation counter, record count, entries present in `b`).
pub fn decode_discovery_log(b: &[u8]) -> (u64, u64, Vec<DiscoveryEntry>) {
    let genctr = get_u64(b, 0);
    let numrec = get_u64(b, 8);
    let mut out = Vec::new();
    for i in 0..numrec.min(1024) as usize {
        let o = DISCOVERY_HDR_LEN + i * DISCOVERY_ENTRY_LEN;
        let Some(x) = b.get(o..o + DISCOVERY_ENTRY_LEN) else {
            break;
        };
        out.push(DiscoveryEntry {
            trtype: x[0],
            adrfam: x[1],
            subtype: x[2],
            treq: x[3],
            portid: get_u16(x, 4),
            cntlid: get_u16(x, 6),
            asqsz: get_u16(x, 8),
            trsvcid: get_str(x, 32, 32),
            subnqn: get_str(x, 256, 256),
            traddr: get_str(x, 512, 256),
            sectype: x[768],
        });
    }
    (genctr, numrec, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identify_controller_offsets() {
        let id = IdentifyController {
            serial: "SN1".into(),
            model: "Basalt".into(),
            firmware: "0.1".into(),
            mdts: 5,
            cntlid: 0x21,
            ver: 0x0001_0400,
            cntrltype: CNTRLTYPE_IO,
            nn: 4,
            sgls: 0x0010_0001,
            subnqn: "nqn.x".into(),
            ioccsz: 516,
            iorcsz: 1,
            msdbd: 1,
            kas: 1,
            ..Default::default()
        };
        let b = id.encode();
        assert_eq!(&b[4..8], b"SN1 ");
        assert_eq!(b[23], b' ');
        assert_eq!(b[77], 5);
        assert_eq!(&b[78..80], &[0x21, 0]);
        assert_eq!(&b[80..84], &[0, 4, 1, 0]);
        assert_eq!(b[111], 1);
        assert_eq!(b[512], 0x66);
        assert_eq!(&b[516..520], &[4, 0, 0, 0]);
        assert_eq!(&b[768..773], b"nqn.x");
        assert_eq!(b[773], 0);
        assert_eq!(&b[1792..1796], &516u32.to_le_bytes());
        assert_eq!(IdentifyController::decode(&b), id);
    }

    #[test]
    fn identify_namespace_offsets() {
        let ns = IdentifyNamespace {
            nsze: 100,
            ncap: 100,
            nuse: 100,
            nsfeat: 0,
            dlfeat: 0x09,
            nguid: [1; 16],
            eui64: [2; 8],
            lbads: 9,
        };
        let b = ns.encode();
        assert_eq!(&b[0..8], &100u64.to_le_bytes());
        assert_eq!(b[33], 9);
        assert_eq!(b[130], 9);
        assert_eq!(&b[104..120], &[1; 16]);
        assert_eq!(IdentifyNamespace::decode(&b), ns);
    }

    #[test]
    fn descriptors_and_lists() {
        let b = encode_ns_descriptors(&[(nidt::EUI64, &[1; 8]), (nidt::UUID, &[3; 16])]);
        assert_eq!(&b[0..4], &[1, 8, 0, 0]);
        assert_eq!(&b[12..16], &[3, 16, 0, 0]);
        assert_eq!(
            decode_ns_descriptors(&b),
            vec![(1, vec![1; 8]), (3, vec![3; 16])]
        );
        let l = encode_nsid_list(&[1, 5]);
        assert_eq!(&l[..12], &[1, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(decode_nsid_list(&l), vec![1, 5]);
    }

    #[test]
    fn discovery_log_layout() {
        let e = DiscoveryEntry {
            trtype: TRTYPE_TCP,
            adrfam: ADRFAM_IPV4,
            subtype: SUBTYPE_NVM,
            treq: 2,
            portid: 1,
            cntlid: 0xFFFF,
            asqsz: 32,
            trsvcid: "4420".into(),
            subnqn: "nqn.a".into(),
            traddr: "127.0.0.1".into(),
            sectype: 0,
        };
        let b = encode_discovery_log(3, std::slice::from_ref(&e));
        assert_eq!(b.len(), 2048);
        assert_eq!(&b[8..16], &1u64.to_le_bytes());
        assert_eq!(&b[1024..1028], &[3, 1, 2, 2]);
        assert_eq!(&b[1024 + 32..1024 + 37], b"4420 ");
        assert_eq!(&b[1024 + 512..1024 + 521], b"127.0.0.1");
        let (g, n, es) = decode_discovery_log(&b);
        assert_eq!((g, n), (3, 1));
        assert_eq!(es, vec![e]);
        // Short input never panics.
        let _ = decode_discovery_log(&b[..1500]);
    }
}
