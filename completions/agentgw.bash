# bash completion for agentgw(1)
# Global options go before the command; every command takes -h/--help.

_agentgw() {
    local cur prev command i
    cur=${COMP_WORDS[COMP_CWORD]}
    prev=${COMP_WORDS[COMP_CWORD - 1]}

    # "--socket PATH", and "--socket=PATH", which bash splits into "--socket" "=" "PATH".
    if [[ $prev == --socket ]] ||
        [[ $prev == = && $COMP_CWORD -ge 2 && ${COMP_WORDS[COMP_CWORD - 2]} == --socket ]]; then
        [[ $cur == = ]] && cur=
        compopt -o filenames 2>/dev/null
        COMPREPLY=($(compgen -f -- "$cur"))
        return
    fi

    # The first word that is neither an option nor the argument of --socket is the command.
    command=
    for ((i = 1; i < COMP_CWORD; i++)); do
        case ${COMP_WORDS[i]} in
            --socket)
                ((i++))
                [[ ${COMP_WORDS[i]} == = ]] && ((i++))
                ;;
            -*) ;;
            *)
                command=${COMP_WORDS[i]}
                break
                ;;
        esac
    done

    case $command in
        '')
            if [[ $cur == -* ]]; then
                COMPREPLY=($(compgen -W '--socket --json --version --help -h' -- "$cur"))
            else
                COMPREPLY=($(compgen -W 'status' -- "$cur"))
            fi
            ;;
        status)
            COMPREPLY=($(compgen -W '--help -h' -- "$cur"))
            ;;
    esac
}

complete -F _agentgw agentgw
