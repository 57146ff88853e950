# bash completion for agentgw(1)
# Global options go before the command; every command takes -h/--help.
# Names of users, agents and services are not completed (that would need the daemon).

_agentgw() {
    local cur prev command sub words opts subs i
    cur=${COMP_WORDS[COMP_CWORD]}
    prev=${COMP_WORDS[COMP_CWORD - 1]}
    # Options that take a value in the next word.
    local valued=' --socket --email --user --name --description --service --lifespan-days '
    valued+='--grace --requests --window --method --path --type --agent --since --action --limit '
    valued+='--as --ttl --to '

    # "--opt VALUE", and "--opt=VALUE", which bash splits into "--opt" "=" "VALUE".
    if [[ $prev == = && $COMP_CWORD -ge 2 ]]; then
        prev=${COMP_WORDS[COMP_CWORD - 2]}
        [[ $cur == = ]] && cur=
    fi
    case $prev in
        --socket)
            compopt -o filenames 2>/dev/null
            COMPREPLY=($(compgen -f -- "$cur"))
            return
            ;;
        --type)
            COMPREPLY=($(compgen -W 'api_key basic oauth2 client_secret' -- "$cur"))
            return
            ;;
        --method)
            COMPREPLY=($(compgen -W 'GET HEAD POST PUT PATCH DELETE OPTIONS' -- "$cur"))
            return
            ;;
    esac
    [[ $valued == *" $prev "* ]] && return

    # The words that are neither options nor their values: the command, then its subcommand.
    words=()
    for ((i = 1; i < COMP_CWORD; i++)); do
        case ${COMP_WORDS[i]} in
            -*=* | =) ;;
            -*)
                if [[ $valued == *" ${COMP_WORDS[i]} "* ]]; then
                    ((i++))
                    [[ ${COMP_WORDS[i]} == = ]] && ((i++))
                fi
                ;;
            *) words+=("${COMP_WORDS[i]}") ;;
        esac
    done
    command=${words[0]}
    sub=${words[1]}

    opts=
    subs=
    case $command in
        '')
            if [[ $cur == -* ]]; then
                COMPREPLY=($(compgen -W '--socket --json --version --help -h' -- "$cur"))
            else
                COMPREPLY=($(compgen -W 'status user agent service credential connect publish retrieve audit' -- "$cur"))
            fi
            return
            ;;
        user)
            subs='add list show rm'
            [[ $sub == add ]] && opts='--email'
            ;;
        agent)
            subs='create list show rotate enable disable rm limit grant revoke'
            case $sub in
                create) opts='--user --name --description --service --lifespan-days' ;;
                list) opts='--user' ;;
                rotate) opts='--grace' ;;
                limit) opts='--requests --window' ;;
                grant) opts='--method --path' ;;
            esac
            ;;
        service)
            subs='list show reload'
            ;;
        credential)
            subs='set list rm'
            case $sub in
                set) opts='--user --agent --type' ;;
                rm) opts='--user --agent' ;;
            esac
            ;;
        connect)
            opts='--user --agent'
            ;;
        publish)
            opts='--as --name --ttl --once --to'
            ;;
        retrieve)
            opts='--as --raw'
            ;;
        audit)
            subs='verify'
            [[ -z $sub ]] && opts='--follow --since --agent --service --action --limit'
            ;;
    esac

    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$opts --help -h" -- "$cur"))
    elif [[ -n $subs && -z $sub ]]; then
        COMPREPLY=($(compgen -W "$subs" -- "$cur"))
    fi
}

complete -F _agentgw agentgw
