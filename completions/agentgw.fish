# fish completion for agentgw(1)
# Global options go before the command; every command takes -h/--help.

# True while no command has been given yet (the argument of --socket is not a command).
function __agentgw_needs_command
    set -l tokens (commandline -opc)
    set -e tokens[1]
    set -l skip 0
    for token in $tokens
        if test $skip -eq 1
            set skip 0
            continue
        end
        switch $token
            case --socket
                set skip 1
            case '-*'
            case '*'
                return 1
        end
    end
    return 0
end

function __agentgw_using_command
    set -l tokens (commandline -opc)
    set -e tokens[1]
    set -l skip 0
    for token in $tokens
        if test $skip -eq 1
            set skip 0
            continue
        end
        switch $token
            case --socket
                set skip 1
            case '-*'
            case '*'
                contains -- $token $argv
                return
        end
    end
    return 1
end

complete -c agentgw -f

complete -c agentgw -n __agentgw_needs_command -l socket -r -F -d 'Control socket of agentgwd'
complete -c agentgw -n __agentgw_needs_command -l json -d 'Print exactly one JSON document'
complete -c agentgw -n __agentgw_needs_command -l version -d 'Print the version and exit'
complete -c agentgw -n __agentgw_needs_command -s h -l help -d 'Print help and exit'

complete -c agentgw -n __agentgw_needs_command -a status -d "Show the daemon's version, listeners and vault"

complete -c agentgw -n '__agentgw_using_command status' -s h -l help -d 'Print help and exit'
