# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_freeroute_global_optspecs
    string join \n m/model= p/provider= exclude= prefer= allow-paid refresh offline s/system= i/image= vision ocr translate to= from= tools= tool-choice= schema= messages= c/continue json stream no-stream max-tokens= temperature= timeout= attempts= race= hedge-after= dry-run config= v/verbose q/quiet h/help V/version
end

function __fish_freeroute_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_freeroute_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_freeroute_using_subcommand
    set -l cmd (__fish_freeroute_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c freeroute -n "__fish_freeroute_needs_command" -s m -l model -d 'Try exactly these models, in this order (repeatable)' -r
complete -c freeroute -n "__fish_freeroute_needs_command" -s p -l provider -d 'Only use these providers (repeatable)' -r -f -a "openrouter\t''
gemini\t''
groq\t''
cerebras\t''
mistral\t''
github\t''
nvidia\t''
cloudflare\t''
huggingface\t''
ovhcloud\t''
llm7\t''
kilo\t''
ollama\t''
llamacpp\t''
lmstudio\t''
vllm\t''"
complete -c freeroute -n "__fish_freeroute_needs_command" -l exclude -d 'Drop models whose id matches GLOB (`*` wildcard, repeatable)' -r
complete -c freeroute -n "__fish_freeroute_needs_command" -l prefer -d 'Rank models whose id matches GLOB first (`*` wildcard, repeatable)' -r
complete -c freeroute -n "__fish_freeroute_needs_command" -s s -l system -d 'System prompt' -r
complete -c freeroute -n "__fish_freeroute_needs_command" -s i -l image -d 'Attach an image of at most 20 MiB: a file, an http(s) URL, or - for image bytes on stdin (repeatable)' -r
complete -c freeroute -n "__fish_freeroute_needs_command" -l to -d 'Target language of --translate [default: config translate_to, else English]' -r
complete -c freeroute -n "__fish_freeroute_needs_command" -l from -d 'Source language of --translate (detected when not given)' -r
complete -c freeroute -n "__fish_freeroute_needs_command" -l tools -d 'OpenAI-style tool definitions (a JSON array, or an object with `tools`)' -r -F
complete -c freeroute -n "__fish_freeroute_needs_command" -l tool-choice -d 'With --tools: auto, none, required, or a tool\'s name' -r -f -a "auto\t''
none\t''
required\t''"
complete -c freeroute -n "__fish_freeroute_needs_command" -l schema -d 'Require a JSON answer matching this JSON Schema (a file, or inline JSON)' -r
complete -c freeroute -n "__fish_freeroute_needs_command" -l messages -d 'Send a whole conversation (JSON array of messages); words become the last user message' -r
complete -c freeroute -n "__fish_freeroute_needs_command" -l max-tokens -d 'Most tokens to generate' -r
complete -c freeroute -n "__fish_freeroute_needs_command" -l temperature -d 'Sampling temperature' -r
complete -c freeroute -n "__fish_freeroute_needs_command" -l timeout -d 'Deadline for the whole run, in seconds [default: 120]' -r
complete -c freeroute -n "__fish_freeroute_needs_command" -l attempts -d 'Most candidates to try [default: 8]' -r
complete -c freeroute -n "__fish_freeroute_needs_command" -l race -d 'Send to the N best candidates at once; the first to produce a token wins [default: 1]' -r
complete -c freeroute -n "__fish_freeroute_needs_command" -l hedge-after -d 'When the running attempt has no first token after MS, start the next candidate beside it' -r
complete -c freeroute -n "__fish_freeroute_needs_command" -l config -d 'Config file (default: $XDG_CONFIG_HOME/freeroute/config.toml)' -r -F
complete -c freeroute -n "__fish_freeroute_needs_command" -l allow-paid -d 'Permit models that are not free (never the default)'
complete -c freeroute -n "__fish_freeroute_needs_command" -l refresh -d 'Refetch the model catalogs now'
complete -c freeroute -n "__fish_freeroute_needs_command" -l offline -d 'Never touch the network for catalogs (use the cached copies)'
complete -c freeroute -n "__fish_freeroute_needs_command" -l vision -d 'Require image input'
complete -c freeroute -n "__fish_freeroute_needs_command" -l ocr -d 'Transcribe all text in the image(s) verbatim, nothing else'
complete -c freeroute -n "__fish_freeroute_needs_command" -l translate -d 'Translate the input; prints only the translation'
complete -c freeroute -n "__fish_freeroute_needs_command" -s c -l continue -d 'Continue the last answered conversation'
complete -c freeroute -n "__fish_freeroute_needs_command" -l json -d 'Print one JSON result object instead of plain text'
complete -c freeroute -n "__fish_freeroute_needs_command" -l stream -d 'Print tokens as they arrive (default when stdout is a terminal)'
complete -c freeroute -n "__fish_freeroute_needs_command" -l no-stream -d 'Print the answer only once it is complete (default when stdout is not a terminal)'
complete -c freeroute -n "__fish_freeroute_needs_command" -l dry-run -d 'Route but send nothing: print the plan and why each model was kept or dropped'
complete -c freeroute -n "__fish_freeroute_needs_command" -s v -l verbose -d 'Print the routing trace on stderr'
complete -c freeroute -n "__fish_freeroute_needs_command" -s q -l quiet -d 'No spinner, no notes on stderr (errors are still printed)'
complete -c freeroute -n "__fish_freeroute_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c freeroute -n "__fish_freeroute_needs_command" -s V -l version -d 'Print version'
complete -c freeroute -n "__fish_freeroute_needs_command" -a "batch" -d 'Answer many prompts: JSONL (or plain lines) in, JSONL out'
complete -c freeroute -n "__fish_freeroute_needs_command" -a "models" -d 'List eligible free models in the order they would be tried'
complete -c freeroute -n "__fish_freeroute_needs_command" -a "stats" -d 'What the router remembers: health, latency, cool-downs, quotas'
complete -c freeroute -n "__fish_freeroute_needs_command" -a "config" -d 'Where the config lives, the merged view, or a commented starter file'
complete -c freeroute -n "__fish_freeroute_needs_command" -a "serve" -d 'Serve the OpenAI and Anthropic APIs locally, routed like a single run'
complete -c freeroute -n "__fish_freeroute_needs_command" -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c freeroute -n "__fish_freeroute_using_subcommand batch" -s o -l output -d 'Write results here (appended as items finish; ids already answered are skipped)' -r -F
complete -c freeroute -n "__fish_freeroute_using_subcommand batch" -l concurrency -d 'Items in flight at once [default: 4]' -r
complete -c freeroute -n "__fish_freeroute_using_subcommand batch" -s m -l model -d 'Try exactly these models, in this order (repeatable)' -r
complete -c freeroute -n "__fish_freeroute_using_subcommand batch" -s p -l provider -d 'Only use these providers (repeatable)' -r -f -a "openrouter\t''
gemini\t''
groq\t''
cerebras\t''
mistral\t''
github\t''
nvidia\t''
cloudflare\t''
huggingface\t''
ovhcloud\t''
llm7\t''
kilo\t''
ollama\t''
llamacpp\t''
lmstudio\t''
vllm\t''"
complete -c freeroute -n "__fish_freeroute_using_subcommand batch" -l exclude -d 'Drop models whose id matches GLOB (`*` wildcard, repeatable)' -r
complete -c freeroute -n "__fish_freeroute_using_subcommand batch" -l prefer -d 'Rank models whose id matches GLOB first (`*` wildcard, repeatable)' -r
complete -c freeroute -n "__fish_freeroute_using_subcommand batch" -s s -l system -d 'System prompt' -r
complete -c freeroute -n "__fish_freeroute_using_subcommand batch" -s i -l image -d 'Attach an image of at most 20 MiB: a file, an http(s) URL, or - for image bytes on stdin (repeatable)' -r
complete -c freeroute -n "__fish_freeroute_using_subcommand batch" -l to -d 'Target language of --translate [default: config translate_to, else English]' -r
complete -c freeroute -n "__fish_freeroute_using_subcommand batch" -l from -d 'Source language of --translate (detected when not given)' -r
complete -c freeroute -n "__fish_freeroute_using_subcommand batch" -l tools -d 'OpenAI-style tool definitions (a JSON array, or an object with `tools`)' -r -F
complete -c freeroute -n "__fish_freeroute_using_subcommand batch" -l tool-choice -d 'With --tools: auto, none, required, or a tool\'s name' -r -f -a "auto\t''
none\t''
required\t''"
complete -c freeroute -n "__fish_freeroute_using_subcommand batch" -l schema -d 'Require a JSON answer matching this JSON Schema (a file, or inline JSON)' -r
complete -c freeroute -n "__fish_freeroute_using_subcommand batch" -l messages -d 'Send a whole conversation (JSON array of messages); words become the last user message' -r
complete -c freeroute -n "__fish_freeroute_using_subcommand batch" -l max-tokens -d 'Most tokens to generate' -r
complete -c freeroute -n "__fish_freeroute_using_subcommand batch" -l temperature -d 'Sampling temperature' -r
complete -c freeroute -n "__fish_freeroute_using_subcommand batch" -l timeout -d 'Deadline for the whole run, in seconds [default: 120]' -r
complete -c freeroute -n "__fish_freeroute_using_subcommand batch" -l attempts -d 'Most candidates to try [default: 8]' -r
complete -c freeroute -n "__fish_freeroute_using_subcommand batch" -l race -d 'Send to the N best candidates at once; the first to produce a token wins [default: 1]' -r
complete -c freeroute -n "__fish_freeroute_using_subcommand batch" -l hedge-after -d 'When the running attempt has no first token after MS, start the next candidate beside it' -r
complete -c freeroute -n "__fish_freeroute_using_subcommand batch" -l config -d 'Config file (default: $XDG_CONFIG_HOME/freeroute/config.toml)' -r -F
complete -c freeroute -n "__fish_freeroute_using_subcommand batch" -l ordered -d 'Write results in input order (default: as they finish)'
complete -c freeroute -n "__fish_freeroute_using_subcommand batch" -l allow-paid -d 'Permit models that are not free (never the default)'
complete -c freeroute -n "__fish_freeroute_using_subcommand batch" -l refresh -d 'Refetch the model catalogs now'
complete -c freeroute -n "__fish_freeroute_using_subcommand batch" -l offline -d 'Never touch the network for catalogs (use the cached copies)'
complete -c freeroute -n "__fish_freeroute_using_subcommand batch" -l vision -d 'Require image input'
complete -c freeroute -n "__fish_freeroute_using_subcommand batch" -l ocr -d 'Transcribe all text in the image(s) verbatim, nothing else'
complete -c freeroute -n "__fish_freeroute_using_subcommand batch" -l translate -d 'Translate the input; prints only the translation'
complete -c freeroute -n "__fish_freeroute_using_subcommand batch" -s c -l continue -d 'Continue the last answered conversation'
complete -c freeroute -n "__fish_freeroute_using_subcommand batch" -l json -d 'Print one JSON result object instead of plain text'
complete -c freeroute -n "__fish_freeroute_using_subcommand batch" -l stream -d 'Print tokens as they arrive (default when stdout is a terminal)'
complete -c freeroute -n "__fish_freeroute_using_subcommand batch" -l no-stream -d 'Print the answer only once it is complete (default when stdout is not a terminal)'
complete -c freeroute -n "__fish_freeroute_using_subcommand batch" -l dry-run -d 'Route but send nothing: print the plan and why each model was kept or dropped'
complete -c freeroute -n "__fish_freeroute_using_subcommand batch" -s v -l verbose -d 'Print the routing trace on stderr'
complete -c freeroute -n "__fish_freeroute_using_subcommand batch" -s q -l quiet -d 'No spinner, no notes on stderr (errors are still printed)'
complete -c freeroute -n "__fish_freeroute_using_subcommand batch" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c freeroute -n "__fish_freeroute_using_subcommand models" -s m -l model -d 'Try exactly these models, in this order (repeatable)' -r
complete -c freeroute -n "__fish_freeroute_using_subcommand models" -s p -l provider -d 'Only use these providers (repeatable)' -r -f -a "openrouter\t''
gemini\t''
groq\t''
cerebras\t''
mistral\t''
github\t''
nvidia\t''
cloudflare\t''
huggingface\t''
ovhcloud\t''
llm7\t''
kilo\t''
ollama\t''
llamacpp\t''
lmstudio\t''
vllm\t''"
complete -c freeroute -n "__fish_freeroute_using_subcommand models" -l exclude -d 'Drop models whose id matches GLOB (`*` wildcard, repeatable)' -r
complete -c freeroute -n "__fish_freeroute_using_subcommand models" -l prefer -d 'Rank models whose id matches GLOB first (`*` wildcard, repeatable)' -r
complete -c freeroute -n "__fish_freeroute_using_subcommand models" -l config -d 'Config file (default: $XDG_CONFIG_HOME/freeroute/config.toml)' -r -F
complete -c freeroute -n "__fish_freeroute_using_subcommand models" -l allow-paid -d 'Permit models that are not free (never the default)'
complete -c freeroute -n "__fish_freeroute_using_subcommand models" -l refresh -d 'Refetch the model catalogs now'
complete -c freeroute -n "__fish_freeroute_using_subcommand models" -l offline -d 'Never touch the network for catalogs (use the cached copies)'
complete -c freeroute -n "__fish_freeroute_using_subcommand models" -l json -d 'Print a JSON array'
complete -c freeroute -n "__fish_freeroute_using_subcommand models" -s v -l verbose -d 'Print the routing trace on stderr'
complete -c freeroute -n "__fish_freeroute_using_subcommand models" -s q -l quiet -d 'No spinner, no notes on stderr (errors are still printed)'
complete -c freeroute -n "__fish_freeroute_using_subcommand models" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c freeroute -n "__fish_freeroute_using_subcommand stats" -l config -d 'Config file (default: $XDG_CONFIG_HOME/freeroute/config.toml)' -r -F
complete -c freeroute -n "__fish_freeroute_using_subcommand stats" -l json -d 'Print one JSON object'
complete -c freeroute -n "__fish_freeroute_using_subcommand stats" -l reset -d 'Forget everything remembered on this host (state, request log and conversations)'
complete -c freeroute -n "__fish_freeroute_using_subcommand stats" -l shared -d 'With --reset: forget the memory shared in Redis instead (every host\'s)'
complete -c freeroute -n "__fish_freeroute_using_subcommand stats" -s v -l verbose -d 'Print the routing trace on stderr'
complete -c freeroute -n "__fish_freeroute_using_subcommand stats" -s q -l quiet -d 'No spinner, no notes on stderr (errors are still printed)'
complete -c freeroute -n "__fish_freeroute_using_subcommand stats" -s h -l help -d 'Print help'
complete -c freeroute -n "__fish_freeroute_using_subcommand config" -l config -d 'Config file (default: $XDG_CONFIG_HOME/freeroute/config.toml)' -r -F
complete -c freeroute -n "__fish_freeroute_using_subcommand config" -l force -d 'With `init`: overwrite an existing file'
complete -c freeroute -n "__fish_freeroute_using_subcommand config" -s v -l verbose -d 'Print the routing trace on stderr'
complete -c freeroute -n "__fish_freeroute_using_subcommand config" -s q -l quiet -d 'No spinner, no notes on stderr (errors are still printed)'
complete -c freeroute -n "__fish_freeroute_using_subcommand config" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c freeroute -n "__fish_freeroute_using_subcommand serve" -l listen -d 'Address to listen on [default: 127.0.0.1:4020]; off loopback it needs --token-env' -r
complete -c freeroute -n "__fish_freeroute_using_subcommand serve" -l token-env -d 'Environment variable holding the token clients must send (Bearer or x-api-key)' -r
complete -c freeroute -n "__fish_freeroute_using_subcommand serve" -l max-concurrency -d 'Requests answered at once; four times as many may wait [default: 64]' -r
complete -c freeroute -n "__fish_freeroute_using_subcommand serve" -l log-format -d 'Format of the request log on stderr' -r -f -a "text\t'One readable line per request'
json\t'One JSON object per request'"
complete -c freeroute -n "__fish_freeroute_using_subcommand serve" -s m -l model -d 'Try exactly these models, in this order (repeatable)' -r
complete -c freeroute -n "__fish_freeroute_using_subcommand serve" -s p -l provider -d 'Only use these providers (repeatable)' -r -f -a "openrouter\t''
gemini\t''
groq\t''
cerebras\t''
mistral\t''
github\t''
nvidia\t''
cloudflare\t''
huggingface\t''
ovhcloud\t''
llm7\t''
kilo\t''
ollama\t''
llamacpp\t''
lmstudio\t''
vllm\t''"
complete -c freeroute -n "__fish_freeroute_using_subcommand serve" -l exclude -d 'Drop models whose id matches GLOB (`*` wildcard, repeatable)' -r
complete -c freeroute -n "__fish_freeroute_using_subcommand serve" -l prefer -d 'Rank models whose id matches GLOB first (`*` wildcard, repeatable)' -r
complete -c freeroute -n "__fish_freeroute_using_subcommand serve" -l timeout -d 'Deadline of each request, in seconds [default: 120]' -r
complete -c freeroute -n "__fish_freeroute_using_subcommand serve" -l attempts -d 'Most candidates each request tries [default: 8]' -r
complete -c freeroute -n "__fish_freeroute_using_subcommand serve" -l hedge-after -d 'When the running attempt has no first token after MS, start the next candidate beside it' -r
complete -c freeroute -n "__fish_freeroute_using_subcommand serve" -l config -d 'Config file (default: $XDG_CONFIG_HOME/freeroute/config.toml)' -r -F
complete -c freeroute -n "__fish_freeroute_using_subcommand serve" -l allow-paid -d 'Permit models that are not free (never the default)'
complete -c freeroute -n "__fish_freeroute_using_subcommand serve" -l refresh -d 'Refetch the model catalogs now'
complete -c freeroute -n "__fish_freeroute_using_subcommand serve" -l offline -d 'Never touch the network for catalogs (use the cached copies)'
complete -c freeroute -n "__fish_freeroute_using_subcommand serve" -s v -l verbose -d 'Print the routing trace on stderr'
complete -c freeroute -n "__fish_freeroute_using_subcommand serve" -s q -l quiet -d 'No spinner, no notes on stderr (errors are still printed)'
complete -c freeroute -n "__fish_freeroute_using_subcommand serve" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c freeroute -n "__fish_freeroute_using_subcommand help; and not __fish_seen_subcommand_from batch models stats config serve help" -f -a "batch" -d 'Answer many prompts: JSONL (or plain lines) in, JSONL out'
complete -c freeroute -n "__fish_freeroute_using_subcommand help; and not __fish_seen_subcommand_from batch models stats config serve help" -f -a "models" -d 'List eligible free models in the order they would be tried'
complete -c freeroute -n "__fish_freeroute_using_subcommand help; and not __fish_seen_subcommand_from batch models stats config serve help" -f -a "stats" -d 'What the router remembers: health, latency, cool-downs, quotas'
complete -c freeroute -n "__fish_freeroute_using_subcommand help; and not __fish_seen_subcommand_from batch models stats config serve help" -f -a "config" -d 'Where the config lives, the merged view, or a commented starter file'
complete -c freeroute -n "__fish_freeroute_using_subcommand help; and not __fish_seen_subcommand_from batch models stats config serve help" -f -a "serve" -d 'Serve the OpenAI and Anthropic APIs locally, routed like a single run'
complete -c freeroute -n "__fish_freeroute_using_subcommand help; and not __fish_seen_subcommand_from batch models stats config serve help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
