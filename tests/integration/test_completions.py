"""Shell completions for ksyncctl (issue 14): bash, zsh and fish, as `make install` puts them
(test_setup.py checks where)."""

import os
import subprocess

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def test_completions(tmp_path):
    comp = os.path.join(ROOT, "completions")
    p = subprocess.run(["bash", "-c", "source %s/ksyncctl.bash; COMP_WORDS=(ksyncctl sy); "
                        "COMP_CWORD=1; _ksyncctl; echo ${COMPREPLY[*]}; "
                        "COMP_WORDS=(ksyncctl conflicts resolve 1 --keep ''); COMP_CWORD=5; "
                        "_ksyncctl; echo ${COMPREPLY[*]}; "
                        "COMP_WORDS=(ksyncctl sync --d); COMP_CWORD=2; _ksyncctl; "
                        "echo ${COMPREPLY[*]}" % comp],
                       capture_output=True, text=True, timeout=30,
                       env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert p.stdout.splitlines() == ["sync", "local server both", "--dry-run"], p
    p = subprocess.run(["fish", "--no-config", "-c", "source %s/ksyncctl.fish; "
                        "complete -C 'ksyncctl conf'; complete -C 'ksyncctl sync --dr'" % comp],
                       capture_output=True, text=True, timeout=30,
                       env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    lines = [ln.split("\t")[0] for ln in p.stdout.splitlines()]
    assert lines == ["config", "conflicts", "--dry-run"], p
    p = subprocess.run(["zsh", "-f", "-c", "fpath=(%s $fpath); autoload -U compinit; "
                        "compinit -u -d %s/zcompdump; print -r -- $_comps[ksyncctl]"
                        % (comp, tmp_path)],
                       capture_output=True, text=True, timeout=30,
                       env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert p.stdout.strip() == "_ksyncctl", p
