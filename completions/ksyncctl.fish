# fish completion for ksyncctl
# SPDX-License-Identifier: MIT

function __ksyncctl_names
    ksyncctl account list 2>/dev/null | awk 'NR > 1 { print $1 }'
    ksyncctl collections 2>/dev/null | awk 'NR > 1 && $1 ~ /\// { print $1 }'
end

set -l verbs status sync account subscribe collections enable disable add-addressbook add-calendar \
    rename-collection delete-collection clients reload config duplicates conflicts log help

complete -c ksyncctl -f
complete -c ksyncctl -n "not __fish_seen_subcommand_from $verbs" -l json -d 'print answers as JSON'
complete -c ksyncctl -n "not __fish_seen_subcommand_from $verbs" -s v -l verbose -d 'more detail'
complete -c ksyncctl -n "not __fish_seen_subcommand_from $verbs" -s V -l version -d 'show the version'
complete -c ksyncctl -s h -l help -d 'show the help'

complete -c ksyncctl -n "not __fish_seen_subcommand_from $verbs" -a status -d 'accounts, collections, conflicts'
complete -c ksyncctl -n "not __fish_seen_subcommand_from $verbs" -a sync -d 'sync now and wait for the end'
complete -c ksyncctl -n "not __fish_seen_subcommand_from $verbs" -a account -d 'add, list or remove accounts'
complete -c ksyncctl -n "not __fish_seen_subcommand_from $verbs" -a subscribe -d 'subscribe to a published calendar (.ics)'
complete -c ksyncctl -n "not __fish_seen_subcommand_from $verbs" -a collections -d 'list the collections'
complete -c ksyncctl -n "not __fish_seen_subcommand_from $verbs" -a enable -d 'sync this collection'
complete -c ksyncctl -n "not __fish_seen_subcommand_from $verbs" -a disable -d 'stop syncing this collection'
complete -c ksyncctl -n "not __fish_seen_subcommand_from $verbs" -a add-addressbook -d 'create an address book'
complete -c ksyncctl -n "not __fish_seen_subcommand_from $verbs" -a add-calendar -d 'create a calendar or task list'
complete -c ksyncctl -n "not __fish_seen_subcommand_from $verbs" -a rename-collection -d 'rename a collection'
complete -c ksyncctl -n "not __fish_seen_subcommand_from $verbs" -a delete-collection -d 'delete a collection'
complete -c ksyncctl -n "not __fish_seen_subcommand_from $verbs" -a clients -d 'khal, khard and todoman settings'
complete -c ksyncctl -n "not __fish_seen_subcommand_from $verbs" -a reload -d 'read ksync.conf again'
complete -c ksyncctl -n "not __fish_seen_subcommand_from $verbs" -a config -d 'check ksync.conf'
complete -c ksyncctl -n "not __fish_seen_subcommand_from $verbs" -a duplicates -d 'duplicate contacts'
complete -c ksyncctl -n "not __fish_seen_subcommand_from $verbs" -a conflicts -d 'list or resolve conflicts'
complete -c ksyncctl -n "not __fish_seen_subcommand_from $verbs" -a log -d 'show the log of ksyncd'

complete -c ksyncctl -n "__fish_seen_subcommand_from sync" -l force -d 'compare everything'
complete -c ksyncctl -n "__fish_seen_subcommand_from sync" -l allow-mass-delete -d 'let it delete most of a collection'
complete -c ksyncctl -n "__fish_seen_subcommand_from sync" -l dry-run -d 'say what would happen'
complete -c ksyncctl -n "__fish_seen_subcommand_from sync status collections clients conflicts duplicates account" -l json -d 'JSON'
complete -c ksyncctl -n "__fish_seen_subcommand_from sync enable disable rename-collection delete-collection" -a '(__ksyncctl_names)'
complete -c ksyncctl -n "__fish_seen_subcommand_from delete-collection" -l allow-mass-delete -d 'delete whatever it holds'
complete -c ksyncctl -n "__fish_seen_subcommand_from account" -a 'add list remove'
complete -c ksyncctl -n "__fish_seen_subcommand_from account" -l provider -xa infomaniak
complete -c ksyncctl -n "__fish_seen_subcommand_from account" -l url -x
complete -c ksyncctl -n "__fish_seen_subcommand_from account" -l username -x
complete -c ksyncctl -n "__fish_seen_subcommand_from account" -l ask-password
complete -c ksyncctl -n "__fish_seen_subcommand_from account" -l password-command -x
complete -c ksyncctl -n "__fish_seen_subcommand_from account" -l password-file -r -F
complete -c ksyncctl -n "__fish_seen_subcommand_from account" -l no-password
complete -c ksyncctl -n "__fish_seen_subcommand_from account" -l ca-file -r -F
complete -c ksyncctl -n "__fish_seen_subcommand_from account" -l allow-insecure-http
complete -c ksyncctl -n "__fish_seen_subcommand_from account" -l interval -x
complete -c ksyncctl -n "__fish_seen_subcommand_from account" -l calendars-path -xa '(__fish_complete_directories)'
complete -c ksyncctl -n "__fish_seen_subcommand_from account" -l contacts-path -xa '(__fish_complete_directories)'
complete -c ksyncctl -n "__fish_seen_subcommand_from account" -l adopt -xa '(__fish_complete_directories)'
complete -c ksyncctl -n "__fish_seen_subcommand_from account" -l delete-local-data
complete -c ksyncctl -n "__fish_seen_subcommand_from add-calendar" -l tasks
complete -c ksyncctl -n "__fish_seen_subcommand_from add-calendar" -l events
complete -c ksyncctl -n "__fish_seen_subcommand_from add-calendar" -l components -xa 'VEVENT VTODO VJOURNAL'
complete -c ksyncctl -n "__fish_seen_subcommand_from add-calendar" -l color -x
complete -c ksyncctl -n "__fish_seen_subcommand_from add-addressbook" -l description -x
complete -c ksyncctl -n "__fish_seen_subcommand_from config" -a check
complete -c ksyncctl -n "__fish_seen_subcommand_from duplicates" -a 'list show merge undo'
complete -c ksyncctl -n "__fish_seen_subcommand_from duplicates" -l keep -x
complete -c ksyncctl -n "__fish_seen_subcommand_from duplicates" -l dry-run
complete -c ksyncctl -n "__fish_seen_subcommand_from duplicates" -l all
complete -c ksyncctl -n "__fish_seen_subcommand_from duplicates" -s y -l yes
complete -c ksyncctl -n "__fish_seen_subcommand_from conflicts" -a 'list resolve'
complete -c ksyncctl -n "__fish_seen_subcommand_from conflicts" -l keep -xa 'local server both'
complete -c ksyncctl -n "__fish_seen_subcommand_from log" -s f -l follow
complete -c ksyncctl -n "__fish_seen_subcommand_from log" -s n -l lines -x
complete -c ksyncctl -n "__fish_seen_subcommand_from log" -l since -x
