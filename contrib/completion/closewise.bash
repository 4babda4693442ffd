# bash completion for closewise(1). Installed as
# share/bash-completion/completions/closewise by `make install`.
# The candidates come from `closewise __complete WORD...`, which answers
# from the option tables that parse each command line: this file never
# needs to change when an option does.
_closewise()
{
    local cur=${COMP_WORDS[COMP_CWORD]} out IFS=$'\n'
    out=$("${COMP_WORDS[0]}" __complete "${COMP_WORDS[@]:1:COMP_CWORD}" 2>/dev/null) || return 0
    if [[ $out == @file ]]; then
        COMPREPLY=($(compgen -f -- "$cur"))
    else
        COMPREPLY=($out)
    fi
    return 0
}
complete -F _closewise closewise
