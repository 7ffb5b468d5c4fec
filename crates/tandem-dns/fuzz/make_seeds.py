"""Writes valid queries for the zone of fuzz_targets/query.rs to corpus/query."""
import os
import struct

NAMES = ["web.svc.example", "www.svc.example", "_primary.web.svc.example", "svc.example", "big.svc.example",
         "nothere.svc.example", "_web._tcp.svc.example", "example.com", "idle.svc.example", "mail.svc.example"]
TYPES = [1, 28, 2, 6, 15, 16, 33, 5, 255, 252, 251]

os.makedirs("corpus/query", exist_ok=True)
i = 0
for name in NAMES:
    for qtype in TYPES:
        for edns in (0, 1):
            q = struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, edns)
            for label in name.split("."):
                q += bytes([len(label)]) + label.encode()
            q += b"\0" + struct.pack(">HH", qtype, 1)
            if edns:
                q += b"\0" + struct.pack(">HHIH", 41, 4096, 0, 0)
            for selector in (0, 1):
                with open(f"corpus/query/seed{i}", "wb") as f:
                    f.write(bytes([selector]) + q)
                i += 1
print(f"{i} seeds in corpus/query")
