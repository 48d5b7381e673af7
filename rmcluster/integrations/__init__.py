"""Drop-in reward services for RL trainers, each importing its trainer lazily (the core stays light).

- `verl_reward_manager.RmclusterRewardManager`: veRL's reward loop (`reward.reward_manager.source: importlib`)
- `openrlhf_reward_func.py`: a `reward_func(queries, prompts, labels)` file for OpenRLHF's `--reward.remote_url`
- `trl_reward.RmclusterReward`: an async reward function for TRL's GRPOTrainer / RLOOTrainer
- `nemo_rl_environment.RmclusterEnvironment`: a NeMo-RL environment actor

All of them call the Serve app through `service.RewardService` (chunking, bounded in-flight requests,
retries and timeouts come from `rmcluster.client`).
"""
