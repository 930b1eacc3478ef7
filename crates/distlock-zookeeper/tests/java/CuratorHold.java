// An Apache Curator InterProcessMutex holder, the interop peer of distlock-zookeeper's tests.
//
// Usage: java CuratorHold <connect string> <lock path> <hold ms>
// Prints "WAITING <ms>" before acquiring, "HELD <ms>" once it holds, "RELEASING <ms>" just
// before it releases after <hold ms>, then "RELEASED" and exits. <ms> is wall-clock time in
// milliseconds since the epoch.

import org.apache.curator.framework.CuratorFramework;
import org.apache.curator.framework.CuratorFrameworkFactory;
import org.apache.curator.framework.recipes.locks.InterProcessMutex;
import org.apache.curator.retry.RetryOneTime;

public class CuratorHold {
    public static void main(String[] args) throws Exception {
        String connect = args[0];
        String path = args[1];
        long holdMs = Long.parseLong(args[2]);
        CuratorFramework client = CuratorFrameworkFactory.builder()
            .connectString(connect)
            .sessionTimeoutMs(5000)
            .connectionTimeoutMs(10000)
            .retryPolicy(new RetryOneTime(200))
            .build();
        client.start();
        client.blockUntilConnected();
        InterProcessMutex mutex = new InterProcessMutex(client, path);
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
