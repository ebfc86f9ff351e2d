import pytest

from rund import config
from rund.errors import InvalidArgument


def test_defaults_work_without_a_file(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "DEFAULT_CONFIG_PATH", tmp_path / "absent.toml")
    cfg = config.load()
    assert cfg.source == ""
    assert cfg.hypervisor.machine == "q35" and cfg.templates.enabled


def test_file_overrides_only_what_it_names(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('log_level = "debug"\n[hypervisor]\nmachine = "microvm"\nmemory_mib = 512\n[templates]\nenabled = false\n')
    cfg = config.load(p)
    assert (cfg.log_level, cfg.hypervisor.machine, cfg.hypervisor.memory_mib) == ("debug", "microvm", 512)
    assert cfg.hypervisor.vcpus == 1 and cfg.templates.enabled is False and cfg.source == str(p)


@pytest.mark.parametrize("text, needle", [
    ("bogus = 1\n", "unknown key 'bogus'"),
    ("[hypervisor]\nmachine = 3\n", "machine must be str"),
    ("[hypervisor]\nmachine = \"pc\"\n", "q35 or microvm"),
    ("[templates]\nenabled = \"yes\"\n", "enabled must be bool"),
    ("[hypervisor]\nvcpus = true\n", "vcpus must be int"),
    ("hypervisor = 1\n", "must be a table"),
    ("[agent]\nteardown_timeout_s = 0\n", "teardown_timeout_s"),
    ("[agent]\nteardown_timeout_s = \"5\"\n", "teardown_timeout_s must be float"),
    ("[[broken\n", "config file"),
    ("[hypervisor]\ntb_size_mib = 0\n", "tb_size_mib must be in 1..2048"),
    ("[rootfs]\nslots = 2\nhotplug_slots = 14\n[templates]\nspare_vms = 1\n", "15 with templates.spare_vms"),
    ("[shim]\nmerge_memory = 1\n", "merge_memory must be bool"),
    ("[templates]\nspare_idle_exit_s = -1\n", "spare_idle_exit_s must be >= 0"),
])
def test_bad_files_are_invalid_argument_naming_the_key(tmp_path, text, needle):
    p = tmp_path / "c.toml"
    p.write_text(text)
    with pytest.raises(InvalidArgument) as e:
        config.load(p)
    assert needle in str(e.value)


def test_missing_explicit_file_is_an_error(tmp_path):
    with pytest.raises(InvalidArgument):
        config.load(tmp_path / "nope.toml")


def test_a_whole_number_is_taken_for_a_float_key(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("[agent]\nteardown_timeout_s = 3\n")
    assert config.load(p).agent.teardown_timeout_s == 3.0
    assert config.Config().agent.teardown_timeout_s == 5.0


def test_mem_merge_reaches_the_vm(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("[hypervisor]\nmem_merge = false\ntb_size_mib = 8\n")
    cfg = config.load(p)
    assert cfg.hypervisor.mem_merge is False and cfg.hypervisor.tb_size_mib == 8
    assert config.HypervisorConfig().mem_merge is True


def test_shim_memory_merging_is_off_by_default(tmp_path):
    assert config.ShimConfig().merge_memory is False
    p = tmp_path / "c.toml"
    p.write_text("[shim]\nmerge_memory = true\n")
    assert config.load(p).shim.merge_memory is True
