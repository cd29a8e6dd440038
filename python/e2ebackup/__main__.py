from e2ebackup.cli import main

# Guarded so that tools which import every module (the docs build) do not run the CLI.
if __name__ == "__main__":
    raise SystemExit(main())
