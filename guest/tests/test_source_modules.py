from guest.source_modules import package_names


def test_package_names_follow_the_kernel_release():
    assert package_names("6.1.0-57-cloud-amd64") == {
        "source": "linux-source-6.1", "headers": "linux-headers-6.1.0-57-cloud-amd64",
        "common": "linux-headers-6.1.0-57-common", "kbuild": "linux-kbuild-6.1"}
