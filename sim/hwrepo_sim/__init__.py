"""What runs inside the simulation sandbox: one job's build or test step, driven through
cocotb's runner. Imports only the standard library and cocotb (1.9 or 2.x), never hwrepo."""
