"""One module per subcommand; each exposes the function its `vae <command>` runs, `(cfg, run_dir) -> result`."""
