# Topology minimal: no devices beyond the q35 defaults and the 9p host root. For scenarios
# that need only L1's CPU (nested KVM), such as vmm-boot.

topology_args() { # RUNDIR
    :
}
