"""`python -m hwrepo_sim {build,test} JOB.json STATUS.json`"""

import sys

from hwrepo_sim.run_job import main

sys.exit(main(sys.argv[1:]))
