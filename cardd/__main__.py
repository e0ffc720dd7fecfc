from cardd.cli import main

raise SystemExit(main())
