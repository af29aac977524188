#!/usr/bin/env python3
"""Writes the seed queries of the query_path fuzz target to seeds/query_path/ (one raw DNS
message per file). Run from anywhere: python3 tests/fuzz/make_seeds.py"""
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds", "query_path")
TYPES = {"A": 1, "NS": 2, "SOA": 6, "PTR": 12, "TXT": 16, "AAAA": 28, "SRV": 33, "ANY": 255}


def name(text):
    wire = b""
    for label in text.strip(".").split("."):
        if label:
            wire += bytes([len(label)]) + label.encode()
    return wire + b"\x00"


def query(qid, qname, qtype, edns=None, do=False, rd=True, qclass=1):
    flags = 0x0100 if rd else 0
    header = struct.pack(">HHHHHH", qid, flags, 1, 0, 0, 1 if edns is not None else 0)
    msg = header + name(qname) + struct.pack(">HH", TYPES.get(qtype, qtype), qclass)
    if edns is not None:
        msg += b"\x00" + struct.pack(">HHBBHH", 41, edns, 0, 0, 0x8000 if do else 0, 0)
    return msg


SEEDS = {
    "a_headless": query(0x1234, "nginx.ns-0.svc.cluster.local", "A"),
    "a_headless_edns": query(0x1235, "nginx.ns-0.svc.cluster.local", "A", edns=1232),
    "aaaa_headless_edns_do": query(0x1236, "nginx.ns-0.svc.cluster.local", "AAAA", edns=4096, do=True),
    "a_endpoint_mixed_case": query(0x1237, "Web-0.NGINX.ns-0.svc.Cluster.Local", "A"),
    "a_clusterip": query(0x1238, "api.ns-0.svc.cluster.local", "A"),
    "aaaa_clusterip_edns": query(0x1239, "api.ns-0.svc.cluster.local", "AAAA", edns=1232),
    "srv_headless": query(0x123A, "_web._tcp.nginx.ns-0.svc.cluster.local", "SRV"),
    "srv_headless_edns": query(0x123B, "_web._tcp.nginx.ns-0.svc.cluster.local", "SRV", edns=1232),
    "srv_big_edns": query(0x123C, "_web._tcp.sts.big.svc.cluster.local", "SRV", edns=1232),
    "a_huge_tcp_sized": query(0x123D, "huge.big.svc.cluster.local", "A", edns=65535),
    "ptr_v4": query(0x123E, "5.1.244.10.in-addr.arpa", "PTR"),
    "ptr_v6_edns": query(0x123F, ".".join(reversed("fd00" + "0" * 27 + "5")) + ".ip6.arpa", "PTR", edns=1232),
    "ptr_clusterip": query(0x1240, "20.0.96.10.in-addr.arpa", "PTR", edns=512),
    "cname_externalname": query(0x1241, "db.ns-0.svc.cluster.local", "A"),
    "nxdomain": query(0x1242, "missing.ns-0.svc.cluster.local", "A", edns=1232),
    "soa_apex": query(0x1243, "cluster.local", "SOA"),
    "any_apex_edns": query(0x1244, "cluster.local", "ANY", edns=1232),
    "txt_dns_version": query(0x1245, "dns-version.cluster.local", "TXT"),
    "pod_insecure": query(0x1246, "10-244-1-5.ns-0.pod.cluster.local", "A"),
    "second_zone": query(0x1247, "nginx.ns-0.svc.k8s.test", "A", edns=1232),
    "out_of_zone": query(0x1248, "example.com", "A"),
    "class_chaos": query(0x1249, "version.bind", "TXT", qclass=3),
    "edns_version_1": query(0x124A, "nginx.ns-0.svc.cluster.local", "A", edns=1232)[:-6]
    + b"\x00\x01\x80\x00\x00\x00",  # ext-rcode 0, version 1, DO, no options
}


def main():
    os.makedirs(OUT, exist_ok=True)
    for stem, data in sorted(SEEDS.items()):
        with open(os.path.join(OUT, stem + ".bin"), "wb") as f:
            f.write(data)
    print(f"wrote {len(SEEDS)} seeds to {OUT}")


if __name__ == "__main__":
    main()
