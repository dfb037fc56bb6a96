//! The answer index: every name of `clusterset.local.` the imports define, and what
//! each name answers. Immutable once built (`build` makes it from the imports); a
//! query is one map lookup. Pure: no IO, no clock, no hickory types.
//!
//! Names are kept lowercase and fully qualified (`web.shop.svc.clusterset.local.`);
//! the caller lowercases the question (DNS names compare without regard to case).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

/// The zone served, fully qualified, lowercase.
pub const ZONE: &str = "clusterset.local.";
/// Every answer's TTL, and the SOA's minimum (the negative-caching TTL): what CoreDNS's
/// multicluster support uses, so that a change reaches clients within seconds.
pub const TTL_SECONDS: u32 = 5;
/// Most records of one kind in one answer, and most additional records. A name with
/// more (a service with hundreds of endpoints) answers a window of them, rotated by the
/// query's id, so that every endpoint is served and clients spread over them. UDP
/// answers are cut further to the client's payload size (and marked truncated).
pub const ANSWERS_MAX: usize = 256;

/// The SOA record's fields besides the serial, as CoreDNS writes them.
pub const SOA_MNAME: &str = "ns.dns.clusterset.local.";
pub const SOA_RNAME: &str = "hostmaster.clusterset.local.";
pub const SOA_REFRESH_SECONDS: i32 = 7_200;
pub const SOA_RETRY_SECONDS: i32 = 1_800;
pub const SOA_EXPIRE_SECONDS: i32 = 86_400;

/// One SRV record's data. The priority is always 0; the weight is computed per answer
/// (as CoreDNS does: `100 / records`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SrvTarget {
    /// The port the target listens on (the origin's target port).
    pub port: u16,
    /// An endpoint name, fully qualified.
    pub target: Arc<str>,
}

/// What one name holds. A name with nothing (an empty non-terminal such as
/// `svc.clusterset.local.`, or a service without ready endpoints) exists: other
/// queries for it are NODATA, not NXDOMAIN.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Node {
    pub v4: Vec<Ipv4Addr>,
    pub v6: Vec<Ipv6Addr>,
    pub srv: Vec<SrvTarget>,
}

impl Node {
    /// Sorts and removes duplicates, so that the zone does not depend on the order in
    /// which the imports listed things.
    pub(super) fn normalize(&mut self) {
        self.v4.sort_unstable();
        self.v4.dedup();
        self.v6.sort_unstable();
        self.v6.dedup();
        self.srv.sort_unstable();
        self.srv.dedup();
    }
}

/// The record types the zone answers; anything else is NODATA for a name that exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueryType {
    A,
    Aaaa,
    Srv,
    Soa,
    Other,
}

/// One answer record's data (the owner is the name asked).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rdata {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Srv {
        priority: u16,
        weight: u16,
        port: u16,
        target: Arc<str>,
    },
    /// The zone's SOA (its fields are the constants above and [`Zone::serial`]).
    Soa,
}

/// What a query gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// NOERROR with records. `additional`: the addresses of the SRV targets.
    Records {
        records: Vec<Rdata>,
        additional: Vec<(Arc<str>, IpAddr)>,
        /// Some records were left out: more than [`ANSWERS_MAX`].
        capped: bool,
    },
    /// NOERROR without records: the name exists, not with this type (SOA in authority).
    NoData,
    /// The name does not exist in the zone (SOA in authority).
    NxDomain,
    /// The name is not in the zone: this server is authoritative for nothing else.
    Refused,
}

/// The answers of every name, built from one version of the imports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Zone {
    pub(super) names: BTreeMap<Box<str>, Node>,
    /// Grows with every build (the SOA serial).
    pub serial: u32,
    /// Endpoint hostnames that are no DNS label, left out.
    pub hostnames_skipped: u64,
}

impl Zone {
    /// How many names exist (empty non-terminals included).
    pub fn names(&self) -> usize {
        self.names.len()
    }

    /// What `qname` (lowercase, fully qualified) answers for `qtype`. `rotate` picks
    /// which window of a long record list is answered (the query id: clients spread).
    pub fn lookup(&self, qname: &str, qtype: QueryType, rotate: usize) -> Lookup {
        if !in_zone(qname) {
            return Lookup::Refused;
        }
        let Some(node) = self.names.get(qname) else {
            return Lookup::NxDomain;
        };
        let (records, capped) = match qtype {
            QueryType::A => window(&node.v4, rotate, |a| Rdata::A(*a)),
            QueryType::Aaaa => window(&node.v6, rotate, |a| Rdata::Aaaa(*a)),
            QueryType::Srv => {
                let (targets, capped) = window(&node.srv, rotate, Clone::clone);
                (srv_records(targets), capped)
            }
            QueryType::Soa if qname == ZONE => (vec![Rdata::Soa], false),
            QueryType::Soa | QueryType::Other => (Vec::new(), false),
        };
        if records.is_empty() {
            return Lookup::NoData;
        }
        let additional = self.additional(&records);
        Lookup::Records {
            records,
            capped: capped || additional.len() > ANSWERS_MAX,
            additional: additional.into_iter().take(ANSWERS_MAX).collect(),
        }
    }

    /// The addresses of the SRV records' targets, in the records' order.
    fn additional(&self, records: &[Rdata]) -> Vec<(Arc<str>, IpAddr)> {
        let mut additional = Vec::new();
        for record in records {
            let Rdata::Srv { target, .. } = record else {
                continue;
            };
            let Some(node) = self.names.get(&**target) else {
                continue;
            };
            let v4 = node.v4.iter().map(|a| IpAddr::V4(*a));
            let v6 = node.v6.iter().map(|a| IpAddr::V6(*a));
            for address in v4.chain(v6) {
                if !additional
                    .iter()
                    .any(|(t, a): &(Arc<str>, IpAddr)| **t == **target && *a == address)
                {
                    additional.push((Arc::clone(target), address));
                }
            }
            if additional.len() > ANSWERS_MAX {
                break;
            }
        }
        additional
    }
}

/// Whether `qname` is the zone or a name below it.
pub fn in_zone(qname: &str) -> bool {
    qname == ZONE
        || qname
            .strip_suffix(ZONE)
            .is_some_and(|rest| rest.ends_with('.'))
}

/// At most [`ANSWERS_MAX`] of `items`, starting at `rotate` (modulo their number) and
/// wrapping around; and whether some were left out.
fn window<T, R>(items: &[T], rotate: usize, map: impl Fn(&T) -> R) -> (Vec<R>, bool) {
    if items.is_empty() {
        return (Vec::new(), false);
    }
    let start = rotate % items.len();
    let taken = items
        .iter()
        .cycle()
        .skip(start)
        .take(items.len().min(ANSWERS_MAX))
        .map(map)
        .collect();
    (taken, items.len() > ANSWERS_MAX)
}

/// SRV records for `targets`: priority 0, and the weight CoreDNS gives records of one
/// priority, `100 / n` (rounded down).
fn srv_records(targets: Vec<SrvTarget>) -> Vec<Rdata> {
    let weight = u16::try_from(100 / targets.len().max(1)).expect("at most 100");
    targets
        .into_iter()
        .map(|t| Rdata::Srv {
            priority: 0,
            weight,
            port: t.port,
            target: t.target,
        })
        .collect()
}
