"""A real llama.cpp server (xllamacpp) on 127.0.0.1 for the ignored `real_llama` tests.

Started by `.ci/llama-server.sh start`, which waits for `/health` and stops it by PID.
It listens on loopback only, on a free port, writes its address to `--addr-file`, and
exits by itself after `--lifetime` seconds or on SIGTERM/SIGINT, so a forgotten server
never outlives CI. See shared/reference/real-backends.md for what it sends.
"""

import argparse
import os
import signal
import sys
import time

import xllamacpp


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", required=True, help="path of the GGUF file")
    ap.add_argument("--addr-file", required=True, help="where to write http://127.0.0.1:PORT")
    ap.add_argument("--alias", default="smollm2", help="the model id it answers to")
    ap.add_argument("--ctx", type=int, default=4096, help="context size in tokens")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lifetime", type=float, default=1800, help="seconds before it exits")
    args = ap.parse_args()

    def stop(signum, _frame):
        print(f"llama_server: signal {signum}, exiting", file=sys.stderr, flush=True)
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    deadline = time.monotonic() + args.lifetime

    params = xllamacpp.CommonParams()
    params.model.path = args.model
    params.hostnames = ["127.0.0.1"]
    params.port = 0
    params.model_alias = {args.alias}
    params.n_ctx = args.ctx
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    params.use_jinja = True

    # Returns once it listens; `/health` is 503 until the model is loaded.
    server = xllamacpp.Server(params)
    address = server.listening_address
    tmp = args.addr_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(address + "\n")
    os.replace(tmp, args.addr_file)
    print(f"llama_server: listening on {address}", file=sys.stderr, flush=True)

    # `server` stays referenced until here: dropping it would close the listener. Short
    # sleeps, because SIGTERM may land on a server thread and wait for the main one.
    while time.monotonic() < deadline:
        time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
    print(f"llama_server: lifetime of {args.lifetime:.0f} s over, exiting", file=sys.stderr, flush=True)
    os._exit(0)


if __name__ == "__main__":
    main()
