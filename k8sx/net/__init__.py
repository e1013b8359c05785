"""net: the one place that talks to the kernel's network stack (netlink through pyroute2, and
iptables), so that CNI plugins, the runtime and flannel share one tested implementation."""
