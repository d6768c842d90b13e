//===- SupportAtomicFileTest.cpp - Publication that destroys nothing ------===//
//
// support::writeFileAtomically on what may lie at an output path: a
// regular file (replaced atomically, its mode kept), a symlink (its target
// replaced, the link kept), a FIFO and a character device (written
// through), and a full or read-only file system (one line naming the path,
// the old file intact, no temporary left). The file-system cases mount a
// tmpfs and skip, with the reason, where that is not permitted.
//
//===----------------------------------------------------------------------===//

#include "RuntimeTestUtil.h"

#include "support/AtomicFile.h"

#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <thread>

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

namespace {

namespace fs = std::filesystem;
namespace support = moegen::support;
using rttest::TempDir;

/// Names in `dir` that start with a dot: temporaries and staging
/// directories.
std::vector<std::string> hiddenEntries(const std::string &dir) {
  std::vector<std::string> names;
  for (const auto &entry : fs::directory_iterator(dir)) {
    std::string name = entry.path().filename().string();
    if (name.rfind('.', 0) == 0)
      names.push_back(name);
  }
  return names;
}

/// A tmpfs mounted on `dir` for the test's lifetime, or the reason why not.
class TmpfsMount {
public:
  TmpfsMount(const std::string &dir, const char *options) : dir(dir) {
    if (::mount("tmpfs", dir.c_str(), "tmpfs", 0, options) == 0)
      mounted = true;
    else
      reason = std::string("cannot mount a tmpfs: ") + std::strerror(errno);
  }
  ~TmpfsMount() {
    if (mounted)
      ::umount2(dir.c_str(), MNT_DETACH);
  }
  bool remount(unsigned long flags, const char *options) {
    return ::mount("tmpfs", dir.c_str(), "tmpfs", MS_REMOUNT | flags,
                   options) == 0;
  }
  bool mounted = false;
  std::string reason;

private:
  std::string dir;
};

TEST(SupportAtomicFile, KeepsTheModeOfTheFileItReplaces) {
  TempDir dir;
  std::string error;
  rttest::writeText(dir / "out.txt", "old");
  ASSERT_EQ(::chmod((dir / "out.txt").c_str(), 0640), 0);
  ASSERT_TRUE(support::writeFileAtomically(dir / "out.txt", "new", error))
      << error;
  struct stat status {};
  ASSERT_EQ(::stat((dir / "out.txt").c_str(), &status), 0);
  EXPECT_EQ(status.st_mode & 07777, 0640u);
  EXPECT_EQ(rttest::readText(dir / "out.txt"), "new");
}

TEST(SupportAtomicFile, ReplacesASymlinksTargetAndKeepsTheLink) {
  TempDir dir;
  std::string error;
  fs::create_directory(dir / "real");
  rttest::writeText(dir / "real/out.txt", "old");
  // A relative link, through a second link: both stay links.
  fs::create_symlink("real/out.txt", dir / "link1");
  fs::create_symlink(dir / "link1", dir / "link2");
  ASSERT_TRUE(support::writeFileAtomically(dir / "link2", "new", error))
      << error;
  EXPECT_TRUE(fs::is_symlink(dir / "link1"));
  EXPECT_TRUE(fs::is_symlink(dir / "link2"));
  EXPECT_EQ(rttest::readText(dir / "real/out.txt"), "new");
  EXPECT_TRUE(hiddenEntries(dir.path()).empty());
  EXPECT_TRUE(hiddenEntries(dir / "real").empty());

  // A dangling link: its target is created, as a shell's ">" would.
  fs::create_symlink("real/new.txt", dir / "dangling");
  ASSERT_TRUE(support::writeFileAtomically(dir / "dangling", "x", error))
      << error;
  EXPECT_TRUE(fs::is_symlink(dir / "dangling"));
  EXPECT_EQ(rttest::readText(dir / "real/new.txt"), "x");

  // A loop is one line, not a hang.
  fs::create_symlink("loop-b", dir / "loop-a");
  fs::create_symlink("loop-a", dir / "loop-b");
  EXPECT_FALSE(support::writeFileAtomically(dir / "loop-a", "x", error));
  EXPECT_EQ(error.rfind(dir / "loop-a: cannot write: ", 0), 0u) << error;
}

TEST(SupportAtomicFile, WritesThroughAFifo) {
  TempDir dir;
  std::string fifo = dir / "fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  std::string received;
  std::thread reader([&] { received = rttest::readText(fifo); });
  std::string error;
  bool ok = support::writeFileAtomically(fifo, "through the pipe", error);
  reader.join();
  ASSERT_TRUE(ok) << error;
  EXPECT_EQ(received, "through the pipe");
  struct stat status {};
  ASSERT_EQ(::lstat(fifo.c_str(), &status), 0);
  EXPECT_TRUE(S_ISFIFO(status.st_mode));
  EXPECT_TRUE(hiddenEntries(dir.path()).empty());
}

TEST(SupportAtomicFile, WritesThroughACharacterDevice) {
  TempDir dir;
  // A private /dev/null (1, 3) and /dev/full (1, 7); the real /dev stays
  // untouched.
  std::string null = dir / "null", full = dir / "full";
  if (::mknod(null.c_str(), S_IFCHR | 0666, makedev(1, 3)) != 0 ||
      ::mknod(full.c_str(), S_IFCHR | 0666, makedev(1, 7)) != 0)
    GTEST_SKIP() << "cannot create a character device: "
                 << std::strerror(errno);
  std::string error;
  ASSERT_TRUE(support::writeFileAtomically(null, "discarded", error)) << error;
  struct stat status {};
  ASSERT_EQ(::lstat(null.c_str(), &status), 0);
  EXPECT_TRUE(S_ISCHR(status.st_mode));

  EXPECT_FALSE(support::writeFileAtomically(full, "no room", error));
  EXPECT_EQ(error, full + ": cannot write: No space left on device");
  ASSERT_EQ(::lstat(full.c_str(), &status), 0);
  EXPECT_TRUE(S_ISCHR(status.st_mode));
  EXPECT_TRUE(hiddenEntries(dir.path()).empty());
}

TEST(SupportAtomicFile, WritesThroughDevStdout) {
  // /dev/stdout -> /proc/self/fd/1 names an open file, not a path: it is
  // written through, and never renamed over.
  TempDir dir;
  std::string out = dir / "stdout.txt";
  int saved = ::dup(1);
  int fd = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::dup2(fd, 1), 1);
  ::close(fd);
  std::string error;
  bool ok = support::writeFileAtomically("/dev/stdout", "to stdout\n", error);
  ::dup2(saved, 1);
  ::close(saved);
  ASSERT_TRUE(ok) << error;
  EXPECT_EQ(rttest::readText(out), "to stdout\n");
  EXPECT_TRUE(hiddenEntries(dir.path()).empty());
}

TEST(SupportAtomicFile, FullDiskKeepsTheOldFileAndLeavesNothing) {
  TempDir dir;
  std::string mountPoint = dir / "mnt";
  fs::create_directory(mountPoint);
  TmpfsMount tmpfs(mountPoint, "size=8k");
  if (!tmpfs.mounted)
    GTEST_SKIP() << tmpfs.reason;
  std::string target = mountPoint + "/out.txt";
  std::string error;
  ASSERT_TRUE(support::writeFileAtomically(target, "old", error)) << error;
  std::string big(64 * 1024, 'x');
  EXPECT_FALSE(support::writeFileAtomically(target, big, error));
  EXPECT_EQ(error.rfind(target + ": cannot write temporary file '", 0), 0u)
      << error;
  EXPECT_NE(error.find("No space left on device"), std::string::npos)
      << error;
  EXPECT_EQ(error.find('\n'), std::string::npos);
  EXPECT_EQ(rttest::readText(target), "old");
  EXPECT_TRUE(hiddenEntries(mountPoint).empty());

  // The same for a staging directory: nothing of it stays behind.
  {
    support::StagingDirectory staging(mountPoint, "test", error);
    ASSERT_FALSE(staging.path().empty()) << error;
    EXPECT_FALSE(
        support::writeFileAtomically(staging.pathFor("big"), big, error));
  }
  EXPECT_TRUE(hiddenEntries(mountPoint).empty());
  EXPECT_EQ(rttest::readText(target), "old");
}

TEST(SupportAtomicFile, ReadOnlyFileSystemKeepsTheOldFile) {
  TempDir dir;
  std::string mountPoint = dir / "mnt";
  fs::create_directory(mountPoint);
  TmpfsMount tmpfs(mountPoint, "size=64k");
  if (!tmpfs.mounted)
    GTEST_SKIP() << tmpfs.reason;
  std::string target = mountPoint + "/out.txt";
  std::string error;
  ASSERT_TRUE(support::writeFileAtomically(target, "old", error)) << error;
  if (!tmpfs.remount(MS_RDONLY, "size=64k"))
    GTEST_SKIP() << "cannot remount the tmpfs read-only: "
                 << std::strerror(errno);
  EXPECT_FALSE(support::writeFileAtomically(target, "new", error));
  EXPECT_EQ(error.rfind(target + ": cannot create temporary file '", 0), 0u)
      << error;
  EXPECT_NE(error.find("Read-only file system"), std::string::npos) << error;
  EXPECT_EQ(rttest::readText(target), "old");
  EXPECT_TRUE(hiddenEntries(mountPoint).empty());
}

TEST(SupportStagingDirectory, PublishesThroughASymlinkAndKeepsTheLink) {
  TempDir dir;
  std::string error, failed;
  fs::create_directory(dir / "elsewhere");
  rttest::writeText(dir / "elsewhere/a.txt", "old");
  fs::create_symlink(dir / "elsewhere/a.txt", dir / "a.txt");
  {
    support::StagingDirectory staging(dir.path(), "test", error);
    ASSERT_FALSE(staging.path().empty()) << error;
    std::vector<std::string> names = {"a.txt", "b.txt"};
    for (const std::string &name : names)
      ASSERT_TRUE(support::writeFileAtomically(staging.pathFor(name),
                                               "new " + name, error))
          << error;
    ASSERT_TRUE(staging.publish(names, failed, error)) << error;
  }
  EXPECT_TRUE(fs::is_symlink(dir / "a.txt"));
  EXPECT_EQ(rttest::readText(dir / "elsewhere/a.txt"), "new a.txt");
  EXPECT_EQ(rttest::readText(dir / "b.txt"), "new b.txt");
  EXPECT_TRUE(hiddenEntries(dir.path()).empty());
}

TEST(SupportAtomicFile, RefusesWhatCannotBeReplacedOrWritten) {
  TempDir dir;
  std::string error;
  // A socket is neither replaced nor written.
  std::string socketPath = dir / "sock";
  if (::mknod(socketPath.c_str(), S_IFSOCK | 0600, 0) == 0) {
    EXPECT_FALSE(support::writeFileAtomically(socketPath, "x", error));
    EXPECT_EQ(error, socketPath + ": cannot write: not a regular file, "
                                  "character device or FIFO");
    struct stat status {};
    ASSERT_EQ(::lstat(socketPath.c_str(), &status), 0);
    EXPECT_TRUE(S_ISSOCK(status.st_mode));
  }
  EXPECT_TRUE(hiddenEntries(dir.path()).empty());
}

} // namespace
