#%Module1.0
##
## AMORE modulefile template (Environment Modules and Lmod).
##
## Install AMORE into an environment with the conda or pip instructions of README.rst, then copy
## this file into your site's module tree as <modulepath>/amore/<version> and set `prefix` below
## to that environment (the folder holding bin/amore-proto). Or let a script do it:
##     sed "s|@PREFIX@|/path/to/env|" scripts/modulefiles/amore.tcl > <modulepath>/amore/0.1.0
## Users then type:  module load amore   (at European XFEL: module load exfel amore)
##
proc ModulesHelp { } {
    puts stderr "AMORE: Automated Run Overview. Commands: amore-proto (init, listen, gui, ...)."
}
module-whatis "AMORE: Automated Run Overview for experiments at large facilities"

set prefix "@PREFIX@"

if { ![file executable "$prefix/bin/amore-proto"] } {
    if { [module-info mode load] } {
        puts stderr "amore: no amore-proto in $prefix/bin; set prefix in this modulefile to the AMORE environment"
        break
    }
}

conflict amore
prepend-path PATH "$prefix/bin"
# the context-file worker may run another Python (processing.context_python); nothing else is
# needed here. Site defaults (broker, topics, data root, Slurm) belong in the site configuration
# file named by AMORE_SITE_CONFIG, e.g.:
# setenv AMORE_SITE_CONFIG /etc/amore/site.toml
