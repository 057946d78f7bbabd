
use builtin;
use str;

set edit:completion:arg-completer[freeroute] = {|@words|
    fn spaces {|n|
        builtin:repeat $n ' ' | str:join ''
    }
    fn cand {|text desc|
        edit:complex-candidate $text &display=$text' '(spaces (- 14 (wcswidth $text)))$desc
    }
    var command = 'freeroute'
    for word $words[1..-1] {
        if (str:has-prefix $word '-') {
            break
        }
        set command = $command';'$word
    }
    var completions = [
        &'freeroute'= {
            cand -m 'Try exactly these models, in this order (repeatable)'
            cand --model 'Try exactly these models, in this order (repeatable)'
            cand -p 'Only use these providers (repeatable)'
            cand --provider 'Only use these providers (repeatable)'
            cand --exclude 'Drop models whose id matches GLOB (`*` wildcard, repeatable)'
            cand --prefer 'Rank models whose id matches GLOB first (`*` wildcard, repeatable)'
            cand -s 'System prompt'
            cand --system 'System prompt'
            cand -i 'Attach an image of at most 20 MiB: a file, an http(s) URL, or - for image bytes on stdin (repeatable)'
            cand --image 'Attach an image of at most 20 MiB: a file, an http(s) URL, or - for image bytes on stdin (repeatable)'
            cand --to 'Target language of --translate [default: config translate_to, else English]'
            cand --from 'Source language of --translate (detected when not given)'
            cand --tools 'OpenAI-style tool definitions (a JSON array, or an object with `tools`)'
            cand --tool-choice 'With --tools: auto, none, required, or a tool''s name'
            cand --schema 'Require a JSON answer matching this JSON Schema (a file, or inline JSON)'
            cand --messages 'Send a whole conversation (JSON array of messages); words become the last user message'
            cand --max-tokens 'Most tokens to generate'
            cand --temperature 'Sampling temperature'
            cand --timeout 'Deadline for the whole run, in seconds [default: 120]'
            cand --attempts 'Most candidates to try [default: 8]'
            cand --race 'Send to the N best candidates at once; the first to produce a token wins [default: 1]'
            cand --hedge-after 'When the running attempt has no first token after MS, start the next candidate beside it'
            cand --config 'Config file (default: $XDG_CONFIG_HOME/freeroute/config.toml)'
            cand --allow-paid 'Permit models that are not free (never the default)'
            cand --refresh 'Refetch the model catalogs now'
            cand --offline 'Never touch the network for catalogs (use the cached copies)'
            cand --vision 'Require image input'
            cand --ocr 'Transcribe all text in the image(s) verbatim, nothing else'
            cand --translate 'Translate the input; prints only the translation'
            cand -c 'Continue the last answered conversation'
            cand --continue 'Continue the last answered conversation'
            cand --json 'Print one JSON result object instead of plain text'
            cand --stream 'Print tokens as they arrive (default when stdout is a terminal)'
            cand --no-stream 'Print the answer only once it is complete (default when stdout is not a terminal)'
            cand --dry-run 'Route but send nothing: print the plan and why each model was kept or dropped'
            cand -v 'Print the routing trace on stderr'
            cand --verbose 'Print the routing trace on stderr'
            cand -q 'No spinner, no notes on stderr (errors are still printed)'
            cand --quiet 'No spinner, no notes on stderr (errors are still printed)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
            cand batch 'Answer many prompts: JSONL (or plain lines) in, JSONL out'
            cand models 'List eligible free models in the order they would be tried'
            cand stats 'What the router remembers: health, latency, cool-downs, quotas'
            cand config 'Where the config lives, the merged view, or a commented starter file'
            cand serve 'Serve the OpenAI and Anthropic APIs locally, routed like a single run'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'freeroute;batch'= {
            cand -o 'Write results here (appended as items finish; ids already answered are skipped)'
            cand --output 'Write results here (appended as items finish; ids already answered are skipped)'
            cand --concurrency 'Items in flight at once [default: 4]'
            cand -m 'Try exactly these models, in this order (repeatable)'
            cand --model 'Try exactly these models, in this order (repeatable)'
            cand -p 'Only use these providers (repeatable)'
            cand --provider 'Only use these providers (repeatable)'
            cand --exclude 'Drop models whose id matches GLOB (`*` wildcard, repeatable)'
            cand --prefer 'Rank models whose id matches GLOB first (`*` wildcard, repeatable)'
            cand -s 'System prompt'
            cand --system 'System prompt'
            cand -i 'Attach an image of at most 20 MiB: a file, an http(s) URL, or - for image bytes on stdin (repeatable)'
            cand --image 'Attach an image of at most 20 MiB: a file, an http(s) URL, or - for image bytes on stdin (repeatable)'
            cand --to 'Target language of --translate [default: config translate_to, else English]'
            cand --from 'Source language of --translate (detected when not given)'
            cand --tools 'OpenAI-style tool definitions (a JSON array, or an object with `tools`)'
            cand --tool-choice 'With --tools: auto, none, required, or a tool''s name'
            cand --schema 'Require a JSON answer matching this JSON Schema (a file, or inline JSON)'
            cand --messages 'Send a whole conversation (JSON array of messages); words become the last user message'
            cand --max-tokens 'Most tokens to generate'
            cand --temperature 'Sampling temperature'
            cand --timeout 'Deadline for the whole run, in seconds [default: 120]'
            cand --attempts 'Most candidates to try [default: 8]'
            cand --race 'Send to the N best candidates at once; the first to produce a token wins [default: 1]'
            cand --hedge-after 'When the running attempt has no first token after MS, start the next candidate beside it'
            cand --config 'Config file (default: $XDG_CONFIG_HOME/freeroute/config.toml)'
            cand --ordered 'Write results in input order (default: as they finish)'
            cand --allow-paid 'Permit models that are not free (never the default)'
            cand --refresh 'Refetch the model catalogs now'
            cand --offline 'Never touch the network for catalogs (use the cached copies)'
            cand --vision 'Require image input'
            cand --ocr 'Transcribe all text in the image(s) verbatim, nothing else'
            cand --translate 'Translate the input; prints only the translation'
            cand -c 'Continue the last answered conversation'
            cand --continue 'Continue the last answered conversation'
            cand --json 'Print one JSON result object instead of plain text'
            cand --stream 'Print tokens as they arrive (default when stdout is a terminal)'
            cand --no-stream 'Print the answer only once it is complete (default when stdout is not a terminal)'
            cand --dry-run 'Route but send nothing: print the plan and why each model was kept or dropped'
            cand -v 'Print the routing trace on stderr'
            cand --verbose 'Print the routing trace on stderr'
            cand -q 'No spinner, no notes on stderr (errors are still printed)'
            cand --quiet 'No spinner, no notes on stderr (errors are still printed)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'freeroute;models'= {
            cand -m 'Try exactly these models, in this order (repeatable)'
            cand --model 'Try exactly these models, in this order (repeatable)'
            cand -p 'Only use these providers (repeatable)'
            cand --provider 'Only use these providers (repeatable)'
            cand --exclude 'Drop models whose id matches GLOB (`*` wildcard, repeatable)'
            cand --prefer 'Rank models whose id matches GLOB first (`*` wildcard, repeatable)'
            cand --config 'Config file (default: $XDG_CONFIG_HOME/freeroute/config.toml)'
            cand --allow-paid 'Permit models that are not free (never the default)'
            cand --refresh 'Refetch the model catalogs now'
            cand --offline 'Never touch the network for catalogs (use the cached copies)'
            cand --json 'Print a JSON array'
            cand -v 'Print the routing trace on stderr'
            cand --verbose 'Print the routing trace on stderr'
            cand -q 'No spinner, no notes on stderr (errors are still printed)'
            cand --quiet 'No spinner, no notes on stderr (errors are still printed)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'freeroute;stats'= {
            cand --config 'Config file (default: $XDG_CONFIG_HOME/freeroute/config.toml)'
            cand --json 'Print one JSON object'
            cand --reset 'Forget everything remembered on this host (state, request log and conversations)'
            cand --shared 'With --reset: forget the memory shared in Redis instead (every host''s)'
            cand -v 'Print the routing trace on stderr'
            cand --verbose 'Print the routing trace on stderr'
            cand -q 'No spinner, no notes on stderr (errors are still printed)'
            cand --quiet 'No spinner, no notes on stderr (errors are still printed)'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'freeroute;config'= {
            cand --config 'Config file (default: $XDG_CONFIG_HOME/freeroute/config.toml)'
            cand --force 'With `init`: overwrite an existing file'
            cand -v 'Print the routing trace on stderr'
            cand --verbose 'Print the routing trace on stderr'
            cand -q 'No spinner, no notes on stderr (errors are still printed)'
            cand --quiet 'No spinner, no notes on stderr (errors are still printed)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'freeroute;serve'= {
            cand --listen 'Address to listen on [default: 127.0.0.1:4020]; off loopback it needs --token-env'
            cand --token-env 'Environment variable holding the token clients must send (Bearer or x-api-key)'
            cand --max-concurrency 'Requests answered at once; four times as many may wait [default: 64]'
            cand --log-format 'Format of the request log on stderr'
            cand -m 'Try exactly these models, in this order (repeatable)'
            cand --model 'Try exactly these models, in this order (repeatable)'
            cand -p 'Only use these providers (repeatable)'
            cand --provider 'Only use these providers (repeatable)'
            cand --exclude 'Drop models whose id matches GLOB (`*` wildcard, repeatable)'
            cand --prefer 'Rank models whose id matches GLOB first (`*` wildcard, repeatable)'
            cand --timeout 'Deadline of each request, in seconds [default: 120]'
            cand --attempts 'Most candidates each request tries [default: 8]'
            cand --hedge-after 'When the running attempt has no first token after MS, start the next candidate beside it'
            cand --config 'Config file (default: $XDG_CONFIG_HOME/freeroute/config.toml)'
            cand --allow-paid 'Permit models that are not free (never the default)'
            cand --refresh 'Refetch the model catalogs now'
            cand --offline 'Never touch the network for catalogs (use the cached copies)'
            cand -v 'Print the routing trace on stderr'
            cand --verbose 'Print the routing trace on stderr'
            cand -q 'No spinner, no notes on stderr (errors are still printed)'
            cand --quiet 'No spinner, no notes on stderr (errors are still printed)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'freeroute;help'= {
            cand batch 'Answer many prompts: JSONL (or plain lines) in, JSONL out'
            cand models 'List eligible free models in the order they would be tried'
            cand stats 'What the router remembers: health, latency, cool-downs, quotas'
            cand config 'Where the config lives, the merged view, or a commented starter file'
            cand serve 'Serve the OpenAI and Anthropic APIs locally, routed like a single run'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'freeroute;help;batch'= {
        }
        &'freeroute;help;models'= {
        }
        &'freeroute;help;stats'= {
        }
        &'freeroute;help;config'= {
        }
        &'freeroute;help;serve'= {
        }
        &'freeroute;help;help'= {
        }
    ]
    $completions[$command]
}
