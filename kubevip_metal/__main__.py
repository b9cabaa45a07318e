from kubevip_metal.entrypoint import main

raise SystemExit(main())
