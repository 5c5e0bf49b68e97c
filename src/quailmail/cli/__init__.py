"""The `quail` command: where real resolvers, clocks and stores are built."""
