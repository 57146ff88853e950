# fish completion for agentgw(1)
# Global options go before the command; every command takes -h/--help.
# Names of users, agents and services are not completed (that would need the daemon).

# The words typed so far that are neither options nor option values: the command, then its
# subcommand, then their arguments.
function __agentgw_words
    set -l valued --socket --email --user --name --description --service --lifespan-days \
        --grace --requests --window --method --path --type --agent --since --action --limit \
        --as --ttl --to
    set -l tokens (commandline -opc)
    set -e tokens[1]
    set -l skip 0
    for token in $tokens
        if test $skip -eq 1
            set skip 0
            continue
        end
        switch $token
            case '-*=*'
            case '-*'
                contains -- $token $valued; and set skip 1
            case '*'
                echo $token
        end
    end
end

# True while no command has been given yet.
function __agentgw_needs_command
    test (count (__agentgw_words)) -eq 0
end

# True when the command is one of $argv (whatever follows it).
function __agentgw_using_command
    set -l words (__agentgw_words)
    test (count $words) -ge 1; and contains -- $words[1] $argv
end

# True when the command is $argv[1] and no subcommand has been given yet.
function __agentgw_needs_subcommand
    set -l words (__agentgw_words)
    test (count $words) -eq 1; and test $words[1] = $argv[1]
end

# True when the command is $argv[1] and its subcommand is one of $argv[2..].
function __agentgw_using_subcommand
    set -l words (__agentgw_words)
    test (count $words) -ge 2; and test $words[1] = $argv[1]; and contains -- $words[2] $argv[2..-1]
end

complete -c agentgw -f

complete -c agentgw -n __agentgw_needs_command -l socket -r -F -d 'Control socket of agentgwd'
complete -c agentgw -n __agentgw_needs_command -l json -d 'Print exactly one JSON document'
complete -c agentgw -n __agentgw_needs_command -l version -d 'Print the version and exit'
complete -c agentgw -s h -l help -d 'Print help and exit'

complete -c agentgw -n __agentgw_needs_command -a status -d "Show the daemon's version, listeners and vault"
complete -c agentgw -n __agentgw_needs_command -a user -d 'Add, list, show and remove users'
complete -c agentgw -n __agentgw_needs_command -a agent -d 'Create and manage agents and their grants'
complete -c agentgw -n __agentgw_needs_command -a service -d 'List, show and reload services'
complete -c agentgw -n __agentgw_needs_command -a credential -d 'Store, list and remove credentials'
complete -c agentgw -n __agentgw_needs_command -a connect -d 'Authorise an OAuth2 service with the device flow'
complete -c agentgw -n __agentgw_needs_command -a publish -d 'Publish data from stdin for other agents'
complete -c agentgw -n __agentgw_needs_command -a retrieve -d 'Retrieve published data by its token'
complete -c agentgw -n __agentgw_needs_command -a audit -d 'Show, follow or verify the audit log'

# user
complete -c agentgw -n '__agentgw_needs_subcommand user' -a add -d 'Register a user'
complete -c agentgw -n '__agentgw_needs_subcommand user' -a list -d 'List users'
complete -c agentgw -n '__agentgw_needs_subcommand user' -a show -d 'Show a user'
complete -c agentgw -n '__agentgw_needs_subcommand user' -a rm -d 'Remove a user who owns no agents'
complete -c agentgw -n '__agentgw_using_subcommand user add' -l email -x -d "The user's email address"

# agent
complete -c agentgw -n '__agentgw_needs_subcommand agent' -a create -d 'Create an agent and print its API key'
complete -c agentgw -n '__agentgw_needs_subcommand agent' -a list -d 'List agents'
complete -c agentgw -n '__agentgw_needs_subcommand agent' -a show -d 'Show an agent'
complete -c agentgw -n '__agentgw_needs_subcommand agent' -a rotate -d "Replace an agent's API key"
complete -c agentgw -n '__agentgw_needs_subcommand agent' -a enable -d 'Let a disabled agent work again'
complete -c agentgw -n '__agentgw_needs_subcommand agent' -a disable -d 'Stop an agent without removing it'
complete -c agentgw -n '__agentgw_needs_subcommand agent' -a rm -d 'Remove an agent'
complete -c agentgw -n '__agentgw_needs_subcommand agent' -a limit -d "Set an agent's rate limit"
complete -c agentgw -n '__agentgw_needs_subcommand agent' -a grant -d 'Let an agent use a service'
complete -c agentgw -n '__agentgw_needs_subcommand agent' -a revoke -d 'Stop an agent using a service'
complete -c agentgw -n '__agentgw_using_subcommand agent create list' -l user -x -d 'User name or id'
complete -c agentgw -n '__agentgw_using_subcommand agent create' -l name -x -d 'Agent name'
complete -c agentgw -n '__agentgw_using_subcommand agent create' -l description -x -d 'What the agent is for'
complete -c agentgw -n '__agentgw_using_subcommand agent create' -l service -x -d 'Grant this service (repeatable)'
complete -c agentgw -n '__agentgw_using_subcommand agent create' -l lifespan-days -x -d 'Key lifetime in days (1-3650)'
complete -c agentgw -n '__agentgw_using_subcommand agent rotate' -l grace -x -d 'Keep the old key working this many seconds'
complete -c agentgw -n '__agentgw_using_subcommand agent limit' -l requests -x -d 'Requests allowed per window'
complete -c agentgw -n '__agentgw_using_subcommand agent limit' -l window -x -d 'Window length in seconds'
complete -c agentgw -n '__agentgw_using_subcommand agent grant' -l method -x -a 'GET HEAD POST PUT PATCH DELETE OPTIONS' -d 'Allow only this method (repeatable)'
complete -c agentgw -n '__agentgw_using_subcommand agent grant' -l path -x -d 'Allow only paths matching this glob (repeatable)'

# service
complete -c agentgw -n '__agentgw_needs_subcommand service' -a list -d 'List services'
complete -c agentgw -n '__agentgw_needs_subcommand service' -a show -d "Show a service's definition"
complete -c agentgw -n '__agentgw_needs_subcommand service' -a reload -d 'Reload the services file'

# credential
complete -c agentgw -n '__agentgw_needs_subcommand credential' -a set -d 'Store a credential read from stdin or a prompt'
complete -c agentgw -n '__agentgw_needs_subcommand credential' -a list -d 'List credentials'
complete -c agentgw -n '__agentgw_needs_subcommand credential' -a rm -d 'Remove a credential'
complete -c agentgw -n '__agentgw_using_subcommand credential set rm' -l user -x -d 'The credential of this user'
complete -c agentgw -n '__agentgw_using_subcommand credential set rm' -l agent -x -d 'The credential of this agent'
complete -c agentgw -n '__agentgw_using_subcommand credential set' -l type -x -a 'api_key basic oauth2 client_secret' -d 'Credential type'

# connect SERVICE: the daemon runs the device flow and stores the tokens
complete -c agentgw -n '__agentgw_using_command connect' -l user -x -d 'Store the tokens for this user'
complete -c agentgw -n '__agentgw_using_command connect' -l agent -x -d 'Store the tokens for this agent'

# publish: the data comes from stdin
complete -c agentgw -n '__agentgw_using_command publish' -l as -x -d 'The publishing agent (name or id)'
complete -c agentgw -n '__agentgw_using_command publish' -l name -x -d 'A label for the data'
complete -c agentgw -n '__agentgw_using_command publish' -l ttl -x -d 'Lifetime in seconds (default 86400)'
complete -c agentgw -n '__agentgw_using_command publish' -l once -d 'Let the data be retrieved only once'
complete -c agentgw -n '__agentgw_using_command publish' -l to -x -d 'Only this agent may retrieve it (repeatable)'

# retrieve [TOKEN]: without a token (or with -) it is read from stdin
complete -c agentgw -n '__agentgw_using_command retrieve' -l as -x -d 'Retrieve as this agent (name or id)'
complete -c agentgw -n '__agentgw_using_command retrieve' -l raw -d 'Print only the data, exactly as published'

# audit: options, or the subcommand verify
complete -c agentgw -n '__agentgw_needs_subcommand audit' -a verify -d "Check the audit log's hash chain"
complete -c agentgw -n '__agentgw_needs_subcommand audit' -l follow -d 'Keep printing new entries until interrupted'
complete -c agentgw -n '__agentgw_needs_subcommand audit' -l since -x -d 'Only entries at or after this RFC 3339 UTC time'
complete -c agentgw -n '__agentgw_needs_subcommand audit' -l agent -x -d 'Only entries about this agent'
complete -c agentgw -n '__agentgw_needs_subcommand audit' -l service -x -d 'Only entries about this service'
complete -c agentgw -n '__agentgw_needs_subcommand audit' -l action -x -d 'Only entries with this action'
complete -c agentgw -n '__agentgw_needs_subcommand audit' -l limit -x -d 'At most this many entries (1-1000)'
