"""One router per resource: `jobs` (training jobs), `downloads` (a job's weights), `deployments` (deploy,
undeploy, trained models, predict), `models` (the base-model catalog), `datasets`."""
