"""net-conf.json parsing, subnet allocation, lease attributes, subnet.env: flanneld's rules, offline.

These pin the exact bytes other nodes (flanneld) read: the LeaseAttrs JSON, the ``a.b.c.d-len`` key,
the four subnet.env lines, and the defaults flanneld derives (SubnetLen, SubnetMin, SubnetMax).
Bad configs must be refused naming the field, and the CLI must say so without a traceback.
"""

from __future__ import annotations

import ipaddress
import json
import random
import struct
import subprocess

import pytest
from support import bin_path

from k8sx.flannel import config
from k8sx.flannel.subnet import (
    LeaseAttrs,
    SubnetEnv,
    allocate,
    parse_subnet_key,
    read_subnet_env,
    render_subnet_env,
    subnet_key,
    write_subnet_env,
)


def test_defaults_follow_flanneld() -> None:
    c = config.parse('{"Network":"10.244.0.0/16"}')
    assert (c.subnet_len, str(c.subnet_min), str(c.subnet_max), c.backend_type) == \
        (24, "10.244.1.0", "10.244.255.0", "udp")
    small = config.parse('{"Network":"10.1.0.0/24","Backend":{"Type":"host-gw"}}')
    assert small.subnet_len == 26 and str(small.subnet_min) == "10.1.0.64" and str(small.subnet_max) == "10.1.0.192"
    v = config.parse({"Network": "10.5.0.0/16", "SubnetLen": 25, "SubnetMin": "10.5.10.0", "SubnetMax": "10.5.20.128",
                      "Backend": {"Type": "vxlan", "VNI": 4, "Port": 4789, "DirectRouting": True}})
    assert v.subnet_len == 25 and v.option("VNI", 1) == 4 and v.option("DirectRouting", False) is True


@pytest.mark.parametrize(("doc", "field"), [
    ("{", "not JSON"),
    ("[]", "not a JSON object"),
    ('{"Backend":{"Type":"vxlan"}}', "Network: missing"),
    ('{"Network":"10.244.0.1/16"}', "Network:"),
    ('{"Network":"banana"}', "Network:"),
    ('{"Network":"10.244.0.0/16","SubnetLen":8}', "SubnetLen:"),
    ('{"Network":"10.244.0.0/16","SubnetLen":"24"}', "SubnetLen:"),
    ('{"Network":"10.244.0.0/16","SubnetMin":"10.245.0.0"}', "SubnetMin:"),
    ('{"Network":"10.244.0.0/16","SubnetMax":"10.244.3.7"}', "SubnetMax:"),
    ('{"Network":"10.244.0.0/16","SubnetMin":"10.244.9.0","SubnetMax":"10.244.3.0"}', "SubnetMin:"),
    ('{"Network":"10.244.0.0/16","Backend":{"Type":"wireguard"}}', "Backend.Type:"),
    ('{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","VNI":"1"}}', "Backend.VNI:"),
    ('{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","VNI":16777216}}', "Backend.VNI:"),
    ('{"Network":"10.244.0.0/16","Backend":{"Type":"udp","Port":70000}}', "Backend.Port:"),
    ('{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw","VNI":1}}', "Backend.VNI:"),
    ('{"Network":"10.244.0.0/16","Netwrok":"x"}', "Netwrok:"),
])
def test_bad_config_names_the_field(doc: str, field: str) -> None:
    with pytest.raises(config.ConfigError) as err:
        config.parse(doc)
    assert field in err.value.message


def test_lease_attrs_json_is_go_marshal_of_lease_attrs() -> None:
    vx = LeaseAttrs("192.168.77.11", "vxlan", {"VNI": 1, "VtepMAC": "c6:b8:b6:77:90:84"})
    assert vx.to_json() == ('{"PublicIP":"192.168.77.11","PublicIPv6":null,"BackendType":"vxlan",'
                            '"BackendData":{"VNI":1,"VtepMAC":"c6:b8:b6:77:90:84"}}')
    assert LeaseAttrs("192.168.77.11", "host-gw").to_json() == \
        '{"PublicIP":"192.168.77.11","PublicIPv6":null,"BackendType":"host-gw"}'
    assert LeaseAttrs("192.168.77.11").to_json() == '{"PublicIP":"192.168.77.11","PublicIPv6":null}'
    assert LeaseAttrs.from_json(vx.to_json()) == vx


def test_subnet_keys() -> None:
    sn = ipaddress.IPv4Network("10.244.1.0/24")
    assert subnet_key(sn) == "10.244.1.0-24"
    assert parse_subnet_key("/coreos.com/network/subnets/10.244.1.0-24") == sn
    assert parse_subnet_key("/coreos.com/network/subnets/10.244.1.0-24&fc00::-64") == sn
    assert parse_subnet_key("/coreos.com/network/subnets/garbage") is None


def test_allocation_skips_taken_and_stays_in_range() -> None:
    c = config.parse('{"Network":"10.244.0.0/16","SubnetMin":"10.244.10.0","SubnetMax":"10.244.12.0"}')
    taken = [ipaddress.IPv4Network("10.244.10.0/24"), ipaddress.IPv4Network("10.244.12.0/24")]
    assert allocate(c, taken, random.Random(1)) == ipaddress.IPv4Network("10.244.11.0/24")
    with pytest.raises(Exception, match="out of subnets"):
        allocate(c, [*taken, ipaddress.IPv4Network("10.244.11.0/24")])


def test_subnet_env_round_trip(tmp_path) -> None:
    env = SubnetEnv(ipaddress.IPv4Network("10.244.0.0/16"), ipaddress.IPv4Network("10.244.1.0/24"), 1450, True)
    assert render_subnet_env(env) == ("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\n"
                                      "FLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n")
    path = str(tmp_path / "run" / "subnet.env")
    write_subnet_env(path, env)
    assert read_subnet_env(path) == env


def test_cli_refuses_bad_config_with_the_field(tmp_path) -> None:
    conf = tmp_path / "net-conf.json"
    conf.write_text(json.dumps({"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan", "VNI": -1}}))
    r = subprocess.run([bin_path("k8sx"), "flannel", "leases", "--lease-file", str(tmp_path / "l.json"),
                        "--net-config-file", str(conf)], capture_output=True, text=True, check=False)
    assert r.returncode == 0  # listing does not need the config
    r = subprocess.run([bin_path("k8sx"), "flannel", "status", "--lease-file", str(tmp_path / "l.json"),
                        "--net-config-file", str(conf), "--iface", "lo"], capture_output=True, text=True, check=False)
    assert r.returncode != 0 and "Backend.VNI" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([bin_path("k8sx"), "flannel", "run", "--lease-file", str(tmp_path / "l.json")],
                       capture_output=True, text=True, check=False)
    assert r.returncode != 0 and "--net-config-file" in r.stderr and "Traceback" not in r.stderr


def test_udp_forwarder_ttl_step_keeps_the_header_checksum_valid() -> None:
    from k8sx.flannel.backends.udp.forwarder import _checksum, decrement_ttl, net_unreachable

    hdr = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 7, 0, 64, 6, 0,
                                ipaddress.IPv4Address("10.244.1.2").packed, ipaddress.IPv4Address("10.244.2.2").packed))
    struct.pack_into("!H", hdr, 10, _checksum(bytes(hdr)))
    pkt = hdr + bytearray(20)
    assert decrement_ttl(pkt) and pkt[8] == 63 and _checksum(bytes(pkt[:20])) == 0
    pkt[8] = 1
    assert not decrement_ttl(pkt)
    icmp = net_unreachable(bytes(pkt), ipaddress.IPv4Address("10.244.1.0"))
    assert icmp[9] == 1 and icmp[12:16] == ipaddress.IPv4Address("10.244.1.0").packed and icmp[16:20] == pkt[12:16]
    assert _checksum(icmp[:20]) == 0 and _checksum(icmp[20:]) == 0 and icmp[20:22] == b"\x03\x00"


def test_iface_completion_offers_this_namespaces_interfaces() -> None:
    from k8sx.cli import complete

    found, _ = complete.candidates(["flannel", "run", "--iface"], "l")
    assert "lo" in [c[0] if isinstance(c, tuple) else c for c in found]
