//! Building zones: validation, determinism, serial, display.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use tandem_dns::{ActiveNode, GroupKind, StaticRecord, Zone, ZoneError, ZoneGroup, ZoneInput, ZoneNode};

#[test]
fn same_input_same_zone_and_serial() {
    let a = Zone::build(&input()).unwrap();
    // Order of nodes, groups and active nodes does not matter.
    let mut shuffled = input();
    shuffled.nodes.reverse();
    shuffled.groups.reverse();
    shuffled.groups.iter_mut().for_each(|g| g.active.reverse());
    let b = Zone::build(&shuffled).unwrap();
    assert_eq!(a.serial(), 42);
    assert_eq!(a.serial(), b.serial());
    assert_eq!(a.records(), b.records());
    assert!(input().same_content(&input()));
    let mut next = input();
    next.serial = 43;
    assert!(next.same_content(&input()));
    next.groups[0].active.clear();
    assert!(!next.same_content(&input()));
}

#[test]
fn records_for_display() {
    let zone = Zone::build(&input()).unwrap();
    let records = zone.records();
    let text: Vec<String> = records
        .iter()
        .map(|(n, t, ty, d)| format!("{n} {t} {ty} {d}"))
        .collect();
    assert_eq!(
        text[0], "svc.example. 300 SOA ns-n1.svc.example. hostmaster.svc.example. 42 60 10 600 1",
        "{text:#?}"
    );
    for expected in [
        "svc.example. 300 NS ns-n1.svc.example.",
        "svc.example. 300 NS ns-n2.svc.example.",
        "svc.example. 300 MX 10 mail.svc.example.",
        "ns-n1.svc.example. 300 A 127.0.0.1",
        "ns-n1.svc.example. 300 AAAA ::1",
        "web.svc.example. 1 A 10.0.0.1",
        "web.svc.example. 1 AAAA 2001:db8::1",
        "_primary.web.svc.example. 1 TXT \"node=n1 epoch=5\"",
        "_web._tcp.svc.example. 1 SRV 0 0 443 web.svc.example.",
        "api.svc.example. 5 A 10.0.1.1",
        "api.svc.example. 5 A 10.0.1.2",
        "_api._tcp.svc.example. 5 SRV 0 0 8080 api.svc.example.",
        "www.svc.example. 300 CNAME web.svc.example.",
        "_sip._udp.svc.example. 300 SRV 10 5 5060 mail.svc.example.",
    ] {
        assert!(text.iter().any(|t| t == expected), "missing {expected:?} in {text:#?}");
    }
    // A group that is not running has no records.
    assert!(!text.iter().any(|t| t.contains("batch")), "{text:#?}");
    assert_eq!(zone.origin(), "svc.example.");
}

#[test]
fn the_zone_name_is_lowercased_and_must_be_absolute() {
    let mut i = input();
    i.zone = "SVC.Example.".into();
    assert_eq!(Zone::build(&i).unwrap().origin(), "svc.example.");
    i.zone = "svc.example".into();
    assert!(matches!(Zone::build(&i), Err(ZoneError::InvalidZoneName { .. })));
    i.zone = "bad..name.".into();
    assert!(matches!(Zone::build(&i), Err(ZoneError::InvalidZoneName { .. })));
}

#[test]
fn invalid_inputs_are_refused_with_reasons() {
    let check = |change: &dyn Fn(&mut ZoneInput), want: &str| {
        let mut i = input();
        change(&mut i);
        let err = Zone::build(&i).unwrap_err().to_string();
        assert!(err.contains(want), "{err:?} lacks {want:?}");
    };
    check(
        &|i| {
            i.nodes.push(ZoneNode {
                name: "Bad_Name".into(),
                addrs: vec![],
            })
        },
        "invalid node name",
    );
    check(
        &|i| {
            i.nodes.push(ZoneNode {
                name: "n1".into(),
                addrs: vec![],
            })
        },
        "used twice",
    );
    check(
        &|i| i.groups.push(ZoneGroup::new("web", GroupKind::Clone)),
        "used twice",
    );
    check(
        &|i| i.groups.push(ZoneGroup::new("ns-n1", GroupKind::Clone)),
        "used twice",
    );
    check(
        &|i| i.groups.push(ZoneGroup::new("-x", GroupKind::Clone)),
        "invalid group name",
    );
    check(
        &|i| {
            i.groups[0].active.push(ActiveNode {
                node: "n2".into(),
                addrs: vec![],
                epoch: 1,
            });
        },
        "active on 2 nodes",
    );
    check(
        &|i| {
            i.static_records
                .push(StaticRecord::new("web", Duration::ZERO, "TXT", "x").unwrap())
        },
        "used twice",
    );
    check(
        &|i| {
            i.static_records
                .push(StaticRecord::new("www", Duration::ZERO, "TXT", "x").unwrap())
        },
        "cannot share its name",
    );
    check(
        &|i| {
            i.static_records
                .push(StaticRecord::new("@", Duration::ZERO, "CNAME", "web").unwrap())
        },
        "apex",
    );
    check(
        &|i| {
            i.static_records
                .push(StaticRecord::new("l1", Duration::ZERO, "CNAME", "l2").unwrap());
            i.static_records
                .push(StaticRecord::new("l2", Duration::ZERO, "CNAME", "l1").unwrap());
        },
        "loops",
    );
    check(
        &|i| {
            i.static_records
                .push(StaticRecord::new("www.other.example.", Duration::ZERO, "A", "1.2.3.4").unwrap())
        },
        "outside the zone",
    );
    check(&|i| i.groups[0].ttl = Duration::from_secs(1 << 40), "TTL");
}

#[test]
fn static_records_parse_or_explain() {
    let ttl = Duration::from_secs(60);
    assert!(StaticRecord::new("x", ttl, "A", "10.0.0.1").is_ok());
    assert!(StaticRecord::new("x", ttl, "aaaa", "2001:db8::5").is_ok());
    assert!(StaticRecord::new("x", ttl, "MX", "10 mail.example.com.").is_ok());
    assert!(StaticRecord::new("x", ttl, "SRV", "1 2 3 target").is_ok());
    assert!(StaticRecord::new("x", ttl, "TXT", "just some text").is_ok());
    let r = StaticRecord::new("x", ttl, "TXT", &"y".repeat(600)).unwrap();
    assert_eq!(r.data().len(), 600 + 3 * 3 - 1, "{}", r.data()); // three quoted strings
    for (name, rtype, data) in [
        ("x", "A", "not-an-ip"),
        ("x", "A", "2001:db8::1"),
        ("x", "NS", "ns1"),
        ("x", "MX", "mail"),
        ("x", "SRV", "1 2"),
        ("bad name", "A", "10.0.0.1"),
        ("x y", "A", "10.0.0.1"),
        ("", "A", "10.0.0.1"),
    ] {
        let err = StaticRecord::new(name, ttl, rtype, data).unwrap_err();
        assert!(
            matches!(err, ZoneError::InvalidStatic { .. }),
            "{name} {rtype} {data}: {err}"
        );
    }
    assert!(StaticRecord::new("x", Duration::from_secs(1 << 32), "A", "10.0.0.1").is_err());
}

#[test]
fn empty_inputs_still_build() {
    let zone = Zone::build(&ZoneInput::new("empty.example.")).unwrap();
    assert_eq!(zone.records().len(), 1);
    assert_eq!(zone.records()[0].2, "SOA");
}

#[test]
fn serial_follows_the_input() {
    let mut i = input();
    i.serial = u32::MAX;
    assert_eq!(Zone::build(&i).unwrap().serial(), u32::MAX);
}
