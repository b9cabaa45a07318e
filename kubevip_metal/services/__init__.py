"""Services of type LoadBalancer: which are ours (model), the watches (informer), who serves them (controller),
and what is written back (status)."""
