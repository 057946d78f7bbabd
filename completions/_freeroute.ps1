
using namespace System.Management.Automation
using namespace System.Management.Automation.Language

Register-ArgumentCompleter -Native -CommandName 'freeroute' -ScriptBlock {
    param($wordToComplete, $commandAst, $cursorPosition)

    $commandElements = $commandAst.CommandElements
    $command = @(
        'freeroute'
        for ($i = 1; $i -lt $commandElements.Count; $i++) {
            $element = $commandElements[$i]
            if ($element -isnot [StringConstantExpressionAst] -or
                $element.StringConstantType -ne [StringConstantType]::BareWord -or
                $element.Value.StartsWith('-') -or
                $element.Value -eq $wordToComplete) {
                break
        }
        $element.Value
    }) -join ';'

    $completions = @(switch ($command) {
        'freeroute' {
            [CompletionResult]::new('-m', '-m', [CompletionResultType]::ParameterName, 'Try exactly these models, in this order (repeatable)')
            [CompletionResult]::new('--model', '--model', [CompletionResultType]::ParameterName, 'Try exactly these models, in this order (repeatable)')
            [CompletionResult]::new('-p', '-p', [CompletionResultType]::ParameterName, 'Only use these providers (repeatable)')
            [CompletionResult]::new('--provider', '--provider', [CompletionResultType]::ParameterName, 'Only use these providers (repeatable)')
            [CompletionResult]::new('--exclude', '--exclude', [CompletionResultType]::ParameterName, 'Drop models whose id matches GLOB (`*` wildcard, repeatable)')
            [CompletionResult]::new('--prefer', '--prefer', [CompletionResultType]::ParameterName, 'Rank models whose id matches GLOB first (`*` wildcard, repeatable)')
            [CompletionResult]::new('-s', '-s', [CompletionResultType]::ParameterName, 'System prompt')
            [CompletionResult]::new('--system', '--system', [CompletionResultType]::ParameterName, 'System prompt')
            [CompletionResult]::new('-i', '-i', [CompletionResultType]::ParameterName, 'Attach an image of at most 20 MiB: a file, an http(s) URL, or - for image bytes on stdin (repeatable)')
            [CompletionResult]::new('--image', '--image', [CompletionResultType]::ParameterName, 'Attach an image of at most 20 MiB: a file, an http(s) URL, or - for image bytes on stdin (repeatable)')
            [CompletionResult]::new('--to', '--to', [CompletionResultType]::ParameterName, 'Target language of --translate [default: config translate_to, else English]')
            [CompletionResult]::new('--from', '--from', [CompletionResultType]::ParameterName, 'Source language of --translate (detected when not given)')
            [CompletionResult]::new('--tools', '--tools', [CompletionResultType]::ParameterName, 'OpenAI-style tool definitions (a JSON array, or an object with `tools`)')
            [CompletionResult]::new('--tool-choice', '--tool-choice', [CompletionResultType]::ParameterName, 'With --tools: auto, none, required, or a tool''s name')
            [CompletionResult]::new('--schema', '--schema', [CompletionResultType]::ParameterName, 'Require a JSON answer matching this JSON Schema (a file, or inline JSON)')
            [CompletionResult]::new('--messages', '--messages', [CompletionResultType]::ParameterName, 'Send a whole conversation (JSON array of messages); words become the last user message')
            [CompletionResult]::new('--max-tokens', '--max-tokens', [CompletionResultType]::ParameterName, 'Most tokens to generate')
            [CompletionResult]::new('--temperature', '--temperature', [CompletionResultType]::ParameterName, 'Sampling temperature')
            [CompletionResult]::new('--timeout', '--timeout', [CompletionResultType]::ParameterName, 'Deadline for the whole run, in seconds [default: 120]')
            [CompletionResult]::new('--attempts', '--attempts', [CompletionResultType]::ParameterName, 'Most candidates to try [default: 8]')
            [CompletionResult]::new('--race', '--race', [CompletionResultType]::ParameterName, 'Send to the N best candidates at once; the first to produce a token wins [default: 1]')
            [CompletionResult]::new('--hedge-after', '--hedge-after', [CompletionResultType]::ParameterName, 'When the running attempt has no first token after MS, start the next candidate beside it')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Config file (default: $XDG_CONFIG_HOME/freeroute/config.toml)')
            [CompletionResult]::new('--allow-paid', '--allow-paid', [CompletionResultType]::ParameterName, 'Permit models that are not free (never the default)')
            [CompletionResult]::new('--refresh', '--refresh', [CompletionResultType]::ParameterName, 'Refetch the model catalogs now')
            [CompletionResult]::new('--offline', '--offline', [CompletionResultType]::ParameterName, 'Never touch the network for catalogs (use the cached copies)')
            [CompletionResult]::new('--vision', '--vision', [CompletionResultType]::ParameterName, 'Require image input')
            [CompletionResult]::new('--ocr', '--ocr', [CompletionResultType]::ParameterName, 'Transcribe all text in the image(s) verbatim, nothing else')
            [CompletionResult]::new('--translate', '--translate', [CompletionResultType]::ParameterName, 'Translate the input; prints only the translation')
            [CompletionResult]::new('-c', '-c', [CompletionResultType]::ParameterName, 'Continue the last answered conversation')
            [CompletionResult]::new('--continue', '--continue', [CompletionResultType]::ParameterName, 'Continue the last answered conversation')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print one JSON result object instead of plain text')
            [CompletionResult]::new('--stream', '--stream', [CompletionResultType]::ParameterName, 'Print tokens as they arrive (default when stdout is a terminal)')
            [CompletionResult]::new('--no-stream', '--no-stream', [CompletionResultType]::ParameterName, 'Print the answer only once it is complete (default when stdout is not a terminal)')
            [CompletionResult]::new('--dry-run', '--dry-run', [CompletionResultType]::ParameterName, 'Route but send nothing: print the plan and why each model was kept or dropped')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'Print the routing trace on stderr')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'Print the routing trace on stderr')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'No spinner, no notes on stderr (errors are still printed)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'No spinner, no notes on stderr (errors are still printed)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('batch', 'batch', [CompletionResultType]::ParameterValue, 'Answer many prompts: JSONL (or plain lines) in, JSONL out')
            [CompletionResult]::new('models', 'models', [CompletionResultType]::ParameterValue, 'List eligible free models in the order they would be tried')
            [CompletionResult]::new('stats', 'stats', [CompletionResultType]::ParameterValue, 'What the router remembers: health, latency, cool-downs, quotas')
            [CompletionResult]::new('config', 'config', [CompletionResultType]::ParameterValue, 'Where the config lives, the merged view, or a commented starter file')
            [CompletionResult]::new('serve', 'serve', [CompletionResultType]::ParameterValue, 'Serve the OpenAI and Anthropic APIs locally, routed like a single run')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'freeroute;batch' {
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Write results here (appended as items finish; ids already answered are skipped)')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Write results here (appended as items finish; ids already answered are skipped)')
            [CompletionResult]::new('--concurrency', '--concurrency', [CompletionResultType]::ParameterName, 'Items in flight at once [default: 4]')
            [CompletionResult]::new('-m', '-m', [CompletionResultType]::ParameterName, 'Try exactly these models, in this order (repeatable)')
            [CompletionResult]::new('--model', '--model', [CompletionResultType]::ParameterName, 'Try exactly these models, in this order (repeatable)')
            [CompletionResult]::new('-p', '-p', [CompletionResultType]::ParameterName, 'Only use these providers (repeatable)')
            [CompletionResult]::new('--provider', '--provider', [CompletionResultType]::ParameterName, 'Only use these providers (repeatable)')
            [CompletionResult]::new('--exclude', '--exclude', [CompletionResultType]::ParameterName, 'Drop models whose id matches GLOB (`*` wildcard, repeatable)')
            [CompletionResult]::new('--prefer', '--prefer', [CompletionResultType]::ParameterName, 'Rank models whose id matches GLOB first (`*` wildcard, repeatable)')
            [CompletionResult]::new('-s', '-s', [CompletionResultType]::ParameterName, 'System prompt')
            [CompletionResult]::new('--system', '--system', [CompletionResultType]::ParameterName, 'System prompt')
            [CompletionResult]::new('-i', '-i', [CompletionResultType]::ParameterName, 'Attach an image of at most 20 MiB: a file, an http(s) URL, or - for image bytes on stdin (repeatable)')
            [CompletionResult]::new('--image', '--image', [CompletionResultType]::ParameterName, 'Attach an image of at most 20 MiB: a file, an http(s) URL, or - for image bytes on stdin (repeatable)')
            [CompletionResult]::new('--to', '--to', [CompletionResultType]::ParameterName, 'Target language of --translate [default: config translate_to, else English]')
            [CompletionResult]::new('--from', '--from', [CompletionResultType]::ParameterName, 'Source language of --translate (detected when not given)')
            [CompletionResult]::new('--tools', '--tools', [CompletionResultType]::ParameterName, 'OpenAI-style tool definitions (a JSON array, or an object with `tools`)')
            [CompletionResult]::new('--tool-choice', '--tool-choice', [CompletionResultType]::ParameterName, 'With --tools: auto, none, required, or a tool''s name')
            [CompletionResult]::new('--schema', '--schema', [CompletionResultType]::ParameterName, 'Require a JSON answer matching this JSON Schema (a file, or inline JSON)')
            [CompletionResult]::new('--messages', '--messages', [CompletionResultType]::ParameterName, 'Send a whole conversation (JSON array of messages); words become the last user message')
            [CompletionResult]::new('--max-tokens', '--max-tokens', [CompletionResultType]::ParameterName, 'Most tokens to generate')
            [CompletionResult]::new('--temperature', '--temperature', [CompletionResultType]::ParameterName, 'Sampling temperature')
            [CompletionResult]::new('--timeout', '--timeout', [CompletionResultType]::ParameterName, 'Deadline for the whole run, in seconds [default: 120]')
            [CompletionResult]::new('--attempts', '--attempts', [CompletionResultType]::ParameterName, 'Most candidates to try [default: 8]')
            [CompletionResult]::new('--race', '--race', [CompletionResultType]::ParameterName, 'Send to the N best candidates at once; the first to produce a token wins [default: 1]')
            [CompletionResult]::new('--hedge-after', '--hedge-after', [CompletionResultType]::ParameterName, 'When the running attempt has no first token after MS, start the next candidate beside it')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Config file (default: $XDG_CONFIG_HOME/freeroute/config.toml)')
            [CompletionResult]::new('--ordered', '--ordered', [CompletionResultType]::ParameterName, 'Write results in input order (default: as they finish)')
            [CompletionResult]::new('--allow-paid', '--allow-paid', [CompletionResultType]::ParameterName, 'Permit models that are not free (never the default)')
            [CompletionResult]::new('--refresh', '--refresh', [CompletionResultType]::ParameterName, 'Refetch the model catalogs now')
            [CompletionResult]::new('--offline', '--offline', [CompletionResultType]::ParameterName, 'Never touch the network for catalogs (use the cached copies)')
            [CompletionResult]::new('--vision', '--vision', [CompletionResultType]::ParameterName, 'Require image input')
            [CompletionResult]::new('--ocr', '--ocr', [CompletionResultType]::ParameterName, 'Transcribe all text in the image(s) verbatim, nothing else')
            [CompletionResult]::new('--translate', '--translate', [CompletionResultType]::ParameterName, 'Translate the input; prints only the translation')
            [CompletionResult]::new('-c', '-c', [CompletionResultType]::ParameterName, 'Continue the last answered conversation')
            [CompletionResult]::new('--continue', '--continue', [CompletionResultType]::ParameterName, 'Continue the last answered conversation')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print one JSON result object instead of plain text')
            [CompletionResult]::new('--stream', '--stream', [CompletionResultType]::ParameterName, 'Print tokens as they arrive (default when stdout is a terminal)')
            [CompletionResult]::new('--no-stream', '--no-stream', [CompletionResultType]::ParameterName, 'Print the answer only once it is complete (default when stdout is not a terminal)')
            [CompletionResult]::new('--dry-run', '--dry-run', [CompletionResultType]::ParameterName, 'Route but send nothing: print the plan and why each model was kept or dropped')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'Print the routing trace on stderr')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'Print the routing trace on stderr')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'No spinner, no notes on stderr (errors are still printed)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'No spinner, no notes on stderr (errors are still printed)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'freeroute;models' {
            [CompletionResult]::new('-m', '-m', [CompletionResultType]::ParameterName, 'Try exactly these models, in this order (repeatable)')
            [CompletionResult]::new('--model', '--model', [CompletionResultType]::ParameterName, 'Try exactly these models, in this order (repeatable)')
            [CompletionResult]::new('-p', '-p', [CompletionResultType]::ParameterName, 'Only use these providers (repeatable)')
            [CompletionResult]::new('--provider', '--provider', [CompletionResultType]::ParameterName, 'Only use these providers (repeatable)')
            [CompletionResult]::new('--exclude', '--exclude', [CompletionResultType]::ParameterName, 'Drop models whose id matches GLOB (`*` wildcard, repeatable)')
            [CompletionResult]::new('--prefer', '--prefer', [CompletionResultType]::ParameterName, 'Rank models whose id matches GLOB first (`*` wildcard, repeatable)')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Config file (default: $XDG_CONFIG_HOME/freeroute/config.toml)')
            [CompletionResult]::new('--allow-paid', '--allow-paid', [CompletionResultType]::ParameterName, 'Permit models that are not free (never the default)')
            [CompletionResult]::new('--refresh', '--refresh', [CompletionResultType]::ParameterName, 'Refetch the model catalogs now')
            [CompletionResult]::new('--offline', '--offline', [CompletionResultType]::ParameterName, 'Never touch the network for catalogs (use the cached copies)')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print a JSON array')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'Print the routing trace on stderr')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'Print the routing trace on stderr')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'No spinner, no notes on stderr (errors are still printed)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'No spinner, no notes on stderr (errors are still printed)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'freeroute;stats' {
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Config file (default: $XDG_CONFIG_HOME/freeroute/config.toml)')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print one JSON object')
            [CompletionResult]::new('--reset', '--reset', [CompletionResultType]::ParameterName, 'Forget everything remembered on this host (state, request log and conversations)')
            [CompletionResult]::new('--shared', '--shared', [CompletionResultType]::ParameterName, 'With --reset: forget the memory shared in Redis instead (every host''s)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'Print the routing trace on stderr')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'Print the routing trace on stderr')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'No spinner, no notes on stderr (errors are still printed)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'No spinner, no notes on stderr (errors are still printed)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'freeroute;config' {
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Config file (default: $XDG_CONFIG_HOME/freeroute/config.toml)')
            [CompletionResult]::new('--force', '--force', [CompletionResultType]::ParameterName, 'With `init`: overwrite an existing file')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'Print the routing trace on stderr')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'Print the routing trace on stderr')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'No spinner, no notes on stderr (errors are still printed)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'No spinner, no notes on stderr (errors are still printed)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'freeroute;serve' {
            [CompletionResult]::new('--listen', '--listen', [CompletionResultType]::ParameterName, 'Address to listen on [default: 127.0.0.1:4020]; off loopback it needs --token-env')
            [CompletionResult]::new('--token-env', '--token-env', [CompletionResultType]::ParameterName, 'Environment variable holding the token clients must send (Bearer or x-api-key)')
            [CompletionResult]::new('--max-concurrency', '--max-concurrency', [CompletionResultType]::ParameterName, 'Requests answered at once; four times as many may wait [default: 64]')
            [CompletionResult]::new('--log-format', '--log-format', [CompletionResultType]::ParameterName, 'Format of the request log on stderr')
            [CompletionResult]::new('-m', '-m', [CompletionResultType]::ParameterName, 'Try exactly these models, in this order (repeatable)')
            [CompletionResult]::new('--model', '--model', [CompletionResultType]::ParameterName, 'Try exactly these models, in this order (repeatable)')
            [CompletionResult]::new('-p', '-p', [CompletionResultType]::ParameterName, 'Only use these providers (repeatable)')
            [CompletionResult]::new('--provider', '--provider', [CompletionResultType]::ParameterName, 'Only use these providers (repeatable)')
            [CompletionResult]::new('--exclude', '--exclude', [CompletionResultType]::ParameterName, 'Drop models whose id matches GLOB (`*` wildcard, repeatable)')
            [CompletionResult]::new('--prefer', '--prefer', [CompletionResultType]::ParameterName, 'Rank models whose id matches GLOB first (`*` wildcard, repeatable)')
            [CompletionResult]::new('--timeout', '--timeout', [CompletionResultType]::ParameterName, 'Deadline of each request, in seconds [default: 120]')
            [CompletionResult]::new('--attempts', '--attempts', [CompletionResultType]::ParameterName, 'Most candidates each request tries [default: 8]')
            [CompletionResult]::new('--hedge-after', '--hedge-after', [CompletionResultType]::ParameterName, 'When the running attempt has no first token after MS, start the next candidate beside it')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Config file (default: $XDG_CONFIG_HOME/freeroute/config.toml)')
            [CompletionResult]::new('--allow-paid', '--allow-paid', [CompletionResultType]::ParameterName, 'Permit models that are not free (never the default)')
            [CompletionResult]::new('--refresh', '--refresh', [CompletionResultType]::ParameterName, 'Refetch the model catalogs now')
            [CompletionResult]::new('--offline', '--offline', [CompletionResultType]::ParameterName, 'Never touch the network for catalogs (use the cached copies)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'Print the routing trace on stderr')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'Print the routing trace on stderr')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'No spinner, no notes on stderr (errors are still printed)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'No spinner, no notes on stderr (errors are still printed)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'freeroute;help' {
            [CompletionResult]::new('batch', 'batch', [CompletionResultType]::ParameterValue, 'Answer many prompts: JSONL (or plain lines) in, JSONL out')
            [CompletionResult]::new('models', 'models', [CompletionResultType]::ParameterValue, 'List eligible free models in the order they would be tried')
            [CompletionResult]::new('stats', 'stats', [CompletionResultType]::ParameterValue, 'What the router remembers: health, latency, cool-downs, quotas')
            [CompletionResult]::new('config', 'config', [CompletionResultType]::ParameterValue, 'Where the config lives, the merged view, or a commented starter file')
            [CompletionResult]::new('serve', 'serve', [CompletionResultType]::ParameterValue, 'Serve the OpenAI and Anthropic APIs locally, routed like a single run')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'freeroute;help;batch' {
            break
        }
        'freeroute;help;models' {
            break
        }
        'freeroute;help;stats' {
            break
        }
        'freeroute;help;config' {
            break
        }
        'freeroute;help;serve' {
            break
        }
        'freeroute;help;help' {
            break
        }
    })

    $completions.Where{ $_.CompletionText -like "$wordToComplete*" } |
        Sort-Object -Property ListItemText
}
