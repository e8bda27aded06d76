"""Configuration: seed keys, Go variants, defaults, and one clear error per problem."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from distsync.config import AWS_KEYS, KEYS, load_config
from distsync.crypto.secret import generate_secret, parse_secret
from distsync.crypto.signing import SigningKey, format_key
from distsync.errors import ConfigError
from distsync.release.config import RELEASE_KEYS

REPO = Path(__file__).resolve().parents[2]

SEED_EXAMPLE = """
SharedSecret = "{secret}"
StorageBucket = "distsync-503aa718-89cc-488c-ae82-0d8f6d08ed1c"
Encrypt = "AEAD_AES_128_CBC_HMAC_SHA_256"
Notify = "S3Poll"
Storage = "S3"

[AwsCreds]
  Region = "us-east-1"
  AccessKey = "AKIAEXAMPLE"
  SecretKey = "wJalrXUtnFEMI"
"""


def test_seed_example_loads(
    write_config: Callable[..., Path], secret_text: str
) -> None:
    cfg = load_config(write_config(SEED_EXAMPLE))
    assert cfg.secret == parse_secret(secret_text)
    assert cfg.storage_bucket.startswith("distsync-503aa718")
    assert (cfg.encrypt, cfg.notify, cfg.storage) == (
        "AEAD_AES_128_CBC_HMAC_SHA_256",
        "S3Poll",
        "S3",
    )
    assert cfg.aws.region == "us-east-1"
    assert cfg.aws.access_key == "AKIAEXAMPLE"
    assert "wJalr" not in repr(cfg) and "secret=" not in repr(cfg)


def test_seed_defaults(write_config: Callable[..., Path]) -> None:
    cfg = load_config(write_config())
    assert (cfg.encrypt, cfg.notify, cfg.storage, cfg.aws.region) == (
        "AEAD_AES_128_CBC_HMAC_SHA_256",
        "S3Poll",
        "S3",
        "us-east-1",
    )
    assert cfg.output_dir is None


def test_go_aws_table_and_output_dir(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    cfg = load_config(
        write_config(
            'SharedSecret = "{secret}"\nStorageBucket = "b"\nOutputDir = "out"\n'
            '[Aws]\nRegion = "eu-west-1"\nAccessKey = "AK"\nSecretKey = "SK"\n'
        )
    )
    assert cfg.aws.region == "eu-west-1" and cfg.aws.secret_key == "SK"
    assert cfg.output_dir == tmp_path / "out"


@pytest.mark.parametrize(
    "value,expected",
    [("s3+bittorrent", "S3+BitTorrent"), ("LOCAL", "Local"), ("s3", "S3")],
)
def test_enums_case_insensitive(
    write_config: Callable[..., Path], value: str, expected: str
) -> None:
    cfg = load_config(
        write_config(
            f'SharedSecret = "{{secret}}"\nStorageBucket = "b"\nStorage = "{value}"\n'
        )
    )
    assert cfg.storage == expected


@pytest.mark.parametrize(
    "text,key,words",
    [
        ('StorageBucket = "b"\n', "SharedSecret", "missing"),
        ('SharedSecret = "{secret}"\n', "StorageBucket", "missing"),
        (
            'SharedSecret = "abc"\nStorageBucket = "b"\n',
            "SharedSecret",
            "48 characters",
        ),
        (
            'SharedSecret = "{secret}"\nStorageBucket = "b"\nStorage = "FTP"\n',
            "Storage",
            "unknown value",
        ),
        (
            'SharedSecret = "{secret}"\nStorageBucket = "b"\nNotify = "SQS"\n',
            "Notify",
            "unknown value",
        ),
        (
            'SharedSecret = "{secret}"\nStorageBucket = "b"\nEncrypt = "ROT13"\n',
            "Encrypt",
            "unknown value",
        ),
        (
            'SharedSecret = "{secret}"\nStorageBucket = "b"\nStorageBuckt = "c"\n',
            "StorageBuckt",
            "did you mean StorageBucket",
        ),
        (
            'SharedSecret = "{secret}"\nStorageBucket = "b"\nPollInterval = "10"\n',
            "PollInterval",
            "must be",
        ),
        (
            'SharedSecret = "{secret}"\nStorageBucket = "b"\nPollInterval = true\n',
            "PollInterval",
            "must be",
        ),
        (
            'SharedSecret = "{secret}"\nStorageBucket = "b"\nPollInterval = 0\n',
            "PollInterval",
            "between",
        ),
        (
            'SharedSecret = "{secret}"\nStorageBucket = "b"\nChunkSize = 1000\n',
            "ChunkSize",
            "multiple of 16",
        ),
        (
            'SharedSecret = "{secret}"\nStorageBucket = "b"\n[AwsCreds]\nRegon = "x"\n',
            "AwsCreds.Regon",
            "did you mean Region",
        ),
        (
            'SharedSecret = "{secret}"\nStorageBucket = "b"\n[Aws]\n[AwsCreds]\n',
            "Aws",
            "not both",
        ),
        (
            'SharedSecret = "{secret}"\nStorageBucket = "b"\nOnUpdate = "x \'unterminated"\n',
            "OnUpdate",
            "cannot be split",
        ),
        (
            'SharedSecret = "{secret}"\nStorageBucket = "b"\nPrefix = "../x"\n',
            "Prefix",
            "key prefix",
        ),
        (
            'SharedSecret = "{secret}"\nStorageBucket = "b"\nSigningKey = "nope"\n',
            "SigningKey",
            'must start with "ed25519:"',
        ),
        (
            'SharedSecret = "{secret}"\nStorageBucket = "b"\nSigningKey = 3\n',
            "SigningKey",
            "must be a string",
        ),
        (
            'SharedSecret = "{secret}"\nStorageBucket = "b"\nTrustedSigners = "ed25519:x"\n',
            "TrustedSigners",
            "must be a list",
        ),
        (
            'SharedSecret = "{secret}"\nStorageBucket = "b"\n'
            f'TrustedSigners = ["{format_key(bytes(32))}", "ed25519:short"]\n',
            "TrustedSigners[1]",
            "43 characters",
        ),
        (
            'SharedSecret = "{secret}"\nStorageBucket = "b"\nTrustedSigners = [7]\n',
            "TrustedSigners[0]",
            "must be a string",
        ),
    ],
)
def test_errors_name_file_key_and_problem(
    write_config: Callable[..., Path], text: str, key: str, words: str
) -> None:
    path = write_config(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert message.startswith(f"{path}: {key}: "), message
    assert words in message
    assert "\n" not in message
    assert err.value.exit_code == 2


def test_bad_crc_is_clear(write_config: Callable[..., Path]) -> None:
    good = generate_secret()
    bad = good[:-2] + ("AA" if good[-2:] != "AA" else "BB")
    with pytest.raises(ConfigError, match="SharedSecret: checksum mismatch"):
        load_config(write_config(f'SharedSecret = "{bad}"\nStorageBucket = "b"\n'))


def test_bad_toml_names_file_and_line(write_config: Callable[..., Path]) -> None:
    path = write_config('SharedSecret = "{secret}\n')
    with pytest.raises(ConfigError, match=r"is not valid TOML: .*line 1"):
        load_config(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope")


def test_group_readable_warns(
    write_config: Callable[..., Path], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        load_config(write_config(mode=0o640))
    assert "readable by group or others" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        load_config(write_config(mode=0o600))
    assert caplog.text == ""


def test_error_never_echoes_the_secret(
    write_config: Callable[..., Path], secret_text: str
) -> None:
    bad = secret_text[:-1] + ("A" if secret_text[-1] != "A" else "B")
    with pytest.raises(ConfigError) as err:
        load_config(write_config(f'SharedSecret = "{bad}"\nStorageBucket = "b"\n'))
    assert bad not in str(err.value) and bad[:20] not in str(err.value)


def test_readme_documents_every_key() -> None:
    readme = (REPO / "README.md").read_text()
    reference = readme.split("## Configuration reference", 1)[1]
    for key in list(KEYS) + list(AWS_KEYS) + list(RELEASE_KEYS):
        assert f"`{key}`" in reference, f"README's configuration reference lacks {key}"


# -- signed uploads ---------------------------------------------------------------------------

SIGNER = SigningKey.generate()
OTHER = SigningKey.generate()


def _signing_config(write_config: Callable[..., Path], **keys: object) -> Path:
    lines = ['SharedSecret = "{secret}"', 'StorageBucket = "b"']
    for key, value in keys.items():
        rendered = (
            "[" + ", ".join(f'"{item}"' for item in value) + "]"  # type: ignore[attr-defined]
            if isinstance(value, list)
            else f'"{value}"'
        )
        lines.append(f"{key} = {rendered}")
    return write_config("\n".join(lines) + "\n")


def test_an_uploader_config_trusts_its_own_key(write_config: Callable[..., Path]) -> None:
    cfg = load_config(_signing_config(write_config, SigningKey=SIGNER.text()))
    assert cfg.signing_key == SIGNER
    assert cfg.trust.signers == {SIGNER.public_key}
    assert cfg.require_signing_key() == SIGNER and cfg.unsigned_warning() is None
    assert SIGNER.text() not in repr(cfg)


def test_a_daemon_config_trusts_its_signers_and_cannot_upload(
    write_config: Callable[..., Path],
) -> None:
    signers = [format_key(SIGNER.public_key), format_key(OTHER.public_key)]
    path = _signing_config(write_config, TrustedSigners=[*signers, signers[0]])
    cfg = load_config(path)
    assert cfg.trusted_signers == (SIGNER.public_key, OTHER.public_key)  # once each
    assert cfg.trust.signers == {SIGNER.public_key, OTHER.public_key}
    assert cfg.unsigned_warning() is None
    cfg.refuse_signing_key()  # none to refuse
    with pytest.raises(ConfigError, match=r"SigningKey: is missing: .*cannot publish") as err:
        cfg.require_signing_key()
    assert str(err.value).startswith(f"{path}: SigningKey: ")


def test_a_daemon_refuses_a_config_holding_a_signing_key(
    write_config: Callable[..., Path],
) -> None:
    cfg = load_config(
        _signing_config(
            write_config,
            SigningKey=SIGNER.text(),
            TrustedSigners=[format_key(SIGNER.public_key)],
        )
    )
    with pytest.raises(ConfigError, match="SigningKey: does not belong in a server's config"):
        cfg.refuse_signing_key()


def test_a_private_key_pasted_into_trusted_signers_is_refused_unechoed(
    write_config: Callable[..., Path],
) -> None:
    path = _signing_config(
        write_config, SigningKey=SIGNER.text(), TrustedSigners=[SIGNER.text()]
    )
    with pytest.raises(ConfigError, match=r"TrustedSigners\[0\]: is this config's private") as err:
        load_config(path)
    assert SIGNER.text()[8:] not in str(err.value)


def test_a_malformed_signing_key_is_never_echoed(write_config: Callable[..., Path]) -> None:
    almost = SIGNER.text()[:-1] + ("B" if SIGNER.text()[-1] != "B" else "C")
    with pytest.raises(ConfigError, match="SigningKey: ") as err:
        load_config(_signing_config(write_config, SigningKey=almost))
    assert almost[8:] not in str(err.value) and almost[8:30] not in str(err.value)


def test_a_config_without_signers_accepts_unsigned_and_says_how_to_sign(
    write_config: Callable[..., Path],
) -> None:
    cfg = load_config(write_config())
    assert not cfg.trust.required and cfg.require_signing_key() is None
    warning = cfg.unsigned_warning()
    assert warning is not None and "TrustedSigners" in warning
    assert "distsync keys new" in warning and "SigningKey" in warning
