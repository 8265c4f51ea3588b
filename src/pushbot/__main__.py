from pushbot.cli import main

raise SystemExit(main())
