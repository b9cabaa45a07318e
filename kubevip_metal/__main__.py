from kubevip_metal.cli import main

raise SystemExit(main())
