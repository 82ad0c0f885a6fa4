# bash completion for ksyncctl                                   -*- shell-script -*-
# SPDX-License-Identifier: MIT

# Accounts and collections come from ksyncd itself ('ksyncctl collections'), so that only
# names it knows are offered.
_ksyncctl_collections()
{
    ksyncctl collections 2>/dev/null | awk 'NR > 1 && $1 ~ /\// { print $1 }'
}

_ksyncctl_accounts()
{
    ksyncctl account list 2>/dev/null | awk 'NR > 1 { print $1 }'
}

_ksyncctl()
{
    local cur prev verb i
    cur=${COMP_WORDS[COMP_CWORD]}
    prev=${COMP_WORDS[COMP_CWORD-1]}
    local verbs="status sync account subscribe collections enable disable add-addressbook
        add-calendar rename-collection delete-collection clients reload config duplicates
        conflicts log help"
    local global="--json --verbose -v --help -h --version -V"

    verb=
    for ((i = 1; i < COMP_CWORD; i++)); do
        case ${COMP_WORDS[i]} in
            -*) ;;
            *) verb=${COMP_WORDS[i]}; break ;;
        esac
    done
    if [[ -z $verb ]]; then
        COMPREPLY=($(compgen -W "$verbs $global" -- "$cur"))
        return
    fi

    local opts="--help"
    case $verb in
        status) opts+=" --json" ;;
        sync) opts+=" --force --allow-mass-delete --dry-run --json" ;;
        subscribe) opts+=" --interval --ca-file --allow-insecure-http" ;;
        account) opts+=" add list remove --provider --url --username --ask-password
            --password-command --password-file --no-password --ca-file
            --allow-insecure-http --interval --calendars-path --contacts-path --adopt
            --delete-local-data --json" ;;
        collections) opts+=" --json" ;;
        add-addressbook) opts+=" --description" ;;
        add-calendar) opts+=" --tasks --events --components --color" ;;
        delete-collection) opts+=" --allow-mass-delete" ;;
        clients) opts+=" --json" ;;
        config) opts+=" check" ;;
        duplicates) opts+=" list show merge undo --json --keep --dry-run --all --yes" ;;
        conflicts) opts+=" list resolve --json --keep" ;;
        log) opts+=" --follow --lines --since" ;;
    esac
    case $prev in
        --keep)
            [[ $verb == conflicts ]] && COMPREPLY=($(compgen -W "local server both" -- "$cur"))
            return ;;
        --provider) COMPREPLY=($(compgen -W "infomaniak" -- "$cur")); return ;;
        --password-file|--ca-file) COMPREPLY=($(compgen -f -- "$cur")); return ;;
        --calendars-path|--contacts-path|--adopt) COMPREPLY=($(compgen -d -- "$cur")); return ;;
        --components) COMPREPLY=($(compgen -W "VEVENT VTODO VJOURNAL" -- "$cur")); return ;;
        --url|--username|--password-command|--interval|--color|--description|--lines|--since)
            return ;;
    esac
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
        return
    fi
    case $verb in
        sync|enable|disable|rename-collection|delete-collection)
            COMPREPLY=($(compgen -W "$(_ksyncctl_accounts) $(_ksyncctl_collections)" -- "$cur")) ;;
        collections|add-addressbook|add-calendar|duplicates)
            COMPREPLY=($(compgen -W "$(_ksyncctl_accounts)" -- "$cur")) ;;
        *) COMPREPLY=($(compgen -W "$opts" -- "$cur")) ;;
    esac
}
complete -F _ksyncctl ksyncctl
