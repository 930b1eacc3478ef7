// An Apache Curator lock holder, the interop peer of distlock-zookeeper's tests.
//
// Usage: java CuratorHold <connect string> <lock path> <hold ms> [mutex|read|write]
// mutex (the default) is an InterProcessMutex; read and write are the two sides of an
// InterProcessReadWriteLock.
// Prints "WAITING <ms>" before acquiring, "HELD <ms>" once it holds, "RELEASING <ms>" just
// before it releases after <hold ms>, then "RELEASED" and exits. <ms> is wall-clock time in
// milliseconds since the epoch.

import org.apache.curator.framework.CuratorFramework;
import org.apache.curator.framework.CuratorFrameworkFactory;
import org.apache.curator.framework.recipes.locks.InterProcessLock;
import org.apache.curator.framework.recipes.locks.InterProcessMutex;
import org.apache.curator.framework.recipes.locks.InterProcessReadWriteLock;
import org.apache.curator.retry.RetryOneTime;

public class CuratorHold {
    public static void main(String[] args) throws Exception {
        String connect = args[0];
        String path = args[1];
        long holdMs = Long.parseLong(args[2]);
        String kind = args.length > 3 ? args[3] : "mutex";
        CuratorFramework client = CuratorFrameworkFactory.builder()
            .connectString(connect)
            .sessionTimeoutMs(5000)
            .connectionTimeoutMs(10000)
            .retryPolicy(new RetryOneTime(200))
            .build();
        client.start();
        client.blockUntilConnected();
        InterProcessLock mutex;
        switch (kind) {
            case "read": mutex = new InterProcessReadWriteLock(client, path).readLock(); break;
            case "write": mutex = new InterProcessReadWriteLock(client, path).writeLock(); break;
            default: mutex = new InterProcessMutex(client, path);
        }
        System.out.println("WAITING " + System.currentTimeMillis());
        mutex.acquire();
        System.out.println("HELD " + System.currentTimeMillis());
        Thread.sleep(holdMs);
        System.out.println("RELEASING " + System.currentTimeMillis());
        mutex.release();
        System.out.println("RELEASED");
        client.close();
        System.exit(0);
    }
}
