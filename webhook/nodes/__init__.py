"""The scheduler's view: which nodes could take a launcher once it requests its devices.

`feasibility` is the scheduler's filters as pure functions, `index` answers them for thousands
of nodes at once, `view` keeps the index current from a list/watch of the API server, `capacity`
is `virtdev capacity`'s table and `paging` the list pager they share. The view reports its state
through a protocol, never through the server's metrics. See docs/architecture.md.
"""
