#!/bin/sh
# Fuzzes one target with libFuzzer: its scratch corpus (fuzz/corpus/TARGET, gitignored, where
# new inputs go), the committed seeds (read only) and its dictionary if there is one.
#
#   fuzz/run.sh TARGET [libFuzzer flags...]     e.g. fuzz/run.sh datapath_config -max_total_time=60
#
# Needs nightly and cargo-fuzz (see fuzz/README.md). Runs from fuzz/, so the build goes to
# fuzz/target rather than Basalt's build/.
set -eu
cd "$(dirname "$0")"
t=${1:?usage: fuzz/run.sh TARGET [libFuzzer flags...]; targets: $(cargo +nightly fuzz list | tr '\n' ' ')}
shift
[ -d "seeds/$t" ] || { echo "no seeds/$t: unknown target $t" >&2; exit 2; }
mkdir -p "corpus/$t"
if [ -f "dict/$t.dict" ]; then
    set -- "-dict=dict/$t.dict" "$@"
fi
exec cargo +nightly fuzz run "$t" "corpus/$t" "seeds/$t" -- "$@"
