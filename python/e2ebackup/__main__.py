from e2ebackup.cli import main

raise SystemExit(main())
