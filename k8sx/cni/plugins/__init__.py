"""k8sx's own CNI plugins: loopback, bridge, host-local IPAM, portmap and the flannel meta-plugin.

Each module holds one plugin's logic (``cmd_add``, ``cmd_check``, ``cmd_del``, ...) driven by
:mod:`k8sx.cni.skel`; the executables in ``plugins/`` and the in-process path run the same code.
Configurations are those of the reference plugins of the same role.
"""
